"""The honest estimate: the chosen model (results.csv's rank 1, best_model.keras) scored once on
the test split, which no trial and no decision ever sees.

The grid picks the best of many trials by validation accuracy, so the winner's validation figure is
biased upward by the selection itself; its accuracy on images it was never chosen on is not. The
score goes to LOGDIR/test_score.json with a 95% Wilson interval, and is not recomputed while the
chosen model and the test files (names and contents) stay the same. A test split that is not the
one the trials trained beside (the data re-split since, or a test image that is also a training or
validation image) is refused: no score. Beside the accuracy: each class's, and the confusion counts
(how many test images of each class were taken for each class).
"""

import csv
import hashlib
import math
from pathlib import Path

import numpy as np

from hparam_sweep import report
from hparam_sweep.common import MANIFEST, SPLITS, TEST_SPLIT, UsageError, class_labels, read_json, write_json

SCORE_FILE = "test_score.json"
Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(correct, count, z=Z_95):
    """The Wilson score interval for a binomial proportion (here: accuracy on `count` images)."""
    if count == 0:
        return 0.0, 1.0
    p = correct / count
    centre = (p + z * z / (2 * count)) / (1 + z * z / count)
    half = z * math.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return max(0.0, centre - half), min(1.0, centre + half)


def file_sha256(path):
    # hashlib.file_digest would do it, but needs Python 3.11 (the project supports 3.10).
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def probabilities_on(model, images, batch_size=64):
    """The model's class probabilities for uint8 images, one row per image."""
    return model.predict(images, batch_size=batch_size, verbose=0)


def accuracy_on(model, images, labels):
    """(correct, count) of the model's predictions (argmax) on uint8 images against int labels."""
    return int(np.sum(probabilities_on(model, images).argmax(axis=1) == labels)), len(labels)


def figures(probabilities, labels, classes):
    """What the test score holds of the predictions against int labels (indices into classes):
    {correct, count, per_class: {class: {accuracy, correct, count}}, confusion: {counts: rows the
    true class, columns the predicted one, in the order of classes}}."""
    counts = report.confusion(labels, probabilities.argmax(axis=1), len(classes))
    per_class = {name: {"accuracy": int(counts[i, i]) / max(1, int(counts[i].sum())), "correct": int(counts[i, i]),
                        "count": int(counts[i].sum())} for i, name in enumerate(classes)}
    return {"correct": int(np.trace(counts)), "count": len(labels), "per_class": per_class,
            "confusion": {"rows": "true class", "columns": "predicted class", "classes": list(classes),
                          "counts": counts.tolist()}}


def images_under(split_dir):
    """The image files under split_dir's class folders that training and the score read, in decode order."""
    from hparam_sweep import pipeline

    return pipeline.split_files(split_dir)[0]


def hashed_test_images(data_dir):
    """{path under data_dir: SHA-256} of the test split's images."""
    return {p.relative_to(data_dir).as_posix(): file_sha256(p) for p in images_under(data_dir / TEST_SPLIT)}


def check_test_split(data_dir, test, trained_on):
    """Refuse (UsageError, saying what to do) test images (`test`: hashed_test_images) that are not
    the test split of the data the chosen model trained on: the data changed since (its
    pipeline.data_fingerprint is no longer `trained_on`, the one the trial recorded: with
    data_split.py's manifest, its hash), test/ is not the manifest's test rows, or a test image is
    byte for byte a train/ or validation/ one."""
    from hparam_sweep import pipeline

    test_dir, manifest = data_dir / TEST_SPLIT, data_dir / MANIFEST
    if pipeline.data_fingerprint(data_dir) != trained_on:
        changed = MANIFEST if manifest.exists() else "train/ and validation/"
        raise UsageError(f"{data_dir} is not the data the chosen model was trained on: its {changed} changed since "
                         f"(re-split?), so {test_dir} may hold images it trained on. Restore that split and rerun, "
                         f"or train on this one with --restart")
    if manifest.exists():
        with manifest.open(newline="") as f:
            listed = {row["path"] for row in csv.DictReader(f) if row["split"] == TEST_SPLIT}
        if differ := sorted(listed ^ set(test)):
            raise UsageError(f"{test_dir} is not the test split of {manifest} (in one and not the other: "
                             f"{len(differ)} files, e.g. {differ[0]}): restore it as data_split.py wrote it, or "
                             f"re-split and train again with --restart")
    # The files' own bytes, not the manifest's SHA-256 column (the hash of each source file, not of
    # the PNG that data_split.py stores for a converted one); only a file of a test image's size can
    # be its copy, so most of train/ is never read.
    sizes = {(data_dir / name).stat().st_size for name in test}
    seen = {file_sha256(p): p for split in SPLITS for p in images_under(data_dir / split) if p.stat().st_size in sizes}
    if copies := [(data_dir / name, seen[sha]) for name, sha in test.items() if sha in seen]:
        raise UsageError(f"{copies[0][0]} is the same image as {copies[0][1]} ({len(copies)} of the {len(test)} "
                         f"test images are in train/ or validation/ too, which trained and chose the model): remove "
                         f"them from {test_dir}, or re-split with data_split.py and train again with --restart")


def score_once(logdir, data_dir, image_size, trial_name, trained_on):
    """The test score of logdir's best_model.keras (trial `trial_name`, trained on data whose
    fingerprint is `trained_on`) on data_dir/test: read from SCORE_FILE when it was made for this
    model and these test files, else computed and written there. None when there is no test split
    or no best model; UsageError, and no score, for a test split that is not the trial's (check_test_split)."""
    import keras

    from hparam_sweep import pipeline
    from hparam_sweep.experiment import BEST_MODEL_FILE

    data_dir = Path(data_dir)
    model_path = Path(logdir) / BEST_MODEL_FILE
    test_dir = data_dir / TEST_SPLIT
    if not test_dir.is_dir() or not model_path.is_file():
        return None
    classes = pipeline.check_data(data_dir)  # again: test/ may have changed since the run started
    test = hashed_test_images(data_dir)
    check_test_split(data_dir, test, trained_on)
    listing = "".join(f"{name}\t{sha}\n" for name, sha in test.items())
    key = {"trial": trial_name, "model_sha256": file_sha256(model_path), "data_fingerprint": trained_on,
           "test_fingerprint": hashlib.sha256(listing.encode()).hexdigest(), "image_size": image_size,
           "classes": list(classes)}
    earlier = read_json(Path(logdir) / SCORE_FILE)
    if earlier and all(earlier.get(k) == v for k, v in key.items()) and (Path(logdir) / report.CHOSEN_RUN).is_dir():
        return earlier
    test = pipeline.load_split(test_dir, image_size)
    images, labels = test.images.numpy(), test.labels.numpy()
    probabilities = probabilities_on(keras.models.load_model(model_path), images)
    found = figures(probabilities, labels, classes)
    report.write_chosen_run(logdir, trial_name, images, labels, probabilities, class_labels(classes),
                            [p.relative_to(data_dir).as_posix() for p in images_under(test_dir)])
    low, high = wilson_interval(found["correct"], found["count"])
    score = {**key, "test_accuracy": found["correct"] / found["count"], **found,
             "interval_95": [low, high], "interval_method": "Wilson score",
             "quote": "the estimate to quote: the chosen model on images no decision saw"}
    write_json(Path(logdir) / SCORE_FILE, score)
    return score


def describe(score):
    """One line for the console."""
    low, high = score["interval_95"]
    per_class = ", ".join(f"{name} {c['accuracy']:.3f} ({c['correct']} of {c['count']})"
                          for name, c in score["per_class"].items())
    names, counts = score["confusion"]["classes"], score["confusion"]["counts"]
    confused = [f"{counts[i][j]} {names[i]} as {names[j]}" for i in range(len(names)) for j in range(len(names))
                if i != j and counts[i][j]]
    return (f"Test accuracy of the chosen model ({score['trial']}): {score['test_accuracy']:.4f} "
            f"(95% interval {low:.3f}-{high:.3f}, {score['correct']} of {score['count']} test images). "
            f"Quote this one: the validation accuracy above chose the model, so it flatters it. "
            f"Per class: {per_class}; taken for another class: {', '.join(confused) or 'none'} "
            f"(all counts in {SCORE_FILE}).")


def chosen_model_line(logdir, data_dir, image_size, ranked, epochs):
    """What is said under the final table about the chosen model (results.csv's rank 1): its test
    score (score_once), or why best_model.keras is another trial's; None when there is nothing to say.
    UsageError when the test split is refused (check_test_split)."""
    from hparam_sweep import experiment

    chosen, kept = experiment.chosen_trial(logdir, ranked, epochs)
    if chosen and kept and kept != chosen:  # a changed --grid whose rank 1 has no model.keras
        return (f"Note: {experiment.BEST_MODEL_FILE} is {kept}'s model, not rank 1's ({chosen}): that trial was "
                f"trained before each trial kept its model. To have it, move {Path(logdir) / chosen} aside and "
                f"rerun: it trains again.")
    score = chosen and score_once(logdir, data_dir, image_size, chosen, ranked[0]["settings"]["data_fingerprint"])
    return describe(score) if score else None
