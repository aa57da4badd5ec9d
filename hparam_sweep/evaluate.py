"""The honest estimate: the chosen model (results.csv's rank 1, best_model.keras) scored once on
the test split, which no trial and no decision ever sees.

The grid picks the best of many trials by validation accuracy, so the winner's validation figure is
biased upward by the selection itself; its accuracy on images it was never chosen on is not. The
score goes to LOGDIR/test_score.json with a 95% Wilson interval, and is not recomputed while the
chosen model and the data stay the same.
"""

import hashlib
import math
from pathlib import Path

import numpy as np

from hparam_sweep.common import TEST_SPLIT, read_json, write_json

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


def accuracy_on(model, images, labels, batch_size=64):
    """(correct, count) of the model's predictions (argmax) on uint8 images against int labels."""
    predicted = np.argmax(model.predict(images, batch_size=batch_size, verbose=0), axis=1)
    return int(np.sum(predicted == labels)), len(labels)


def score_once(logdir, data_dir, image_size, trial_name):
    """The test score of logdir's best_model.keras (trial `trial_name`) on data_dir/test: read from
    SCORE_FILE when it was made for this model and these data, else computed and written there.
    None when there is no test split or no best model."""
    import keras

    from hparam_sweep import pipeline
    from hparam_sweep.experiment import BEST_MODEL_FILE

    model_path = Path(logdir) / BEST_MODEL_FILE
    test_dir = Path(data_dir) / TEST_SPLIT
    if not test_dir.is_dir() or not model_path.is_file():
        return None
    key = {"trial": trial_name, "model_sha256": file_sha256(model_path),
           "data_fingerprint": pipeline.data_fingerprint(Path(data_dir)),
           "image_size": image_size}
    earlier = read_json(Path(logdir) / SCORE_FILE)
    if earlier and all(earlier.get(k) == v for k, v in key.items()):
        return earlier
    test = pipeline.load_split(test_dir, image_size)
    correct, count = accuracy_on(keras.models.load_model(model_path), test.images.numpy(), test.labels.numpy())
    low, high = wilson_interval(correct, count)
    score = {**key, "test_accuracy": correct / count, "correct": correct, "count": count,
             "interval_95": [low, high], "interval_method": "Wilson score",
             "quote": "the estimate to quote: the chosen model on images no decision saw"}
    write_json(Path(logdir) / SCORE_FILE, score)
    return score


def describe(score):
    """One line for the console."""
    low, high = score["interval_95"]
    return (f"Test accuracy of the chosen model ({score['trial']}): {score['test_accuracy']:.4f} "
            f"(95% interval {low:.3f}-{high:.3f}, {score['correct']} of {score['count']} test images). "
            f"Quote this one: the validation accuracy above chose the model, so it flatters it.")


def chosen_model_line(logdir, data_dir, image_size, ranked, epochs):
    """What is said under the final table about the chosen model (results.csv's rank 1): its test
    score (score_once), or why best_model.keras is another trial's; None when there is nothing to say."""
    from hparam_sweep import experiment

    chosen, kept = experiment.chosen_trial(logdir, ranked, epochs)
    if chosen and kept and kept != chosen:  # a changed --grid whose rank 1 has no model.keras
        return (f"Note: {experiment.BEST_MODEL_FILE} is {kept}'s model, not rank 1's ({chosen}): that trial was "
                f"trained before each trial kept its model. To have it, move {Path(logdir) / chosen} aside and "
                f"rerun: it trains again.")
    score = chosen and score_once(logdir, data_dir, image_size, chosen)
    return describe(score) if score else None
