"""The experiment's own runs for TensorBoard, beside the trials' (neither is an HParams session, so
the test split stays out of every trial's metrics and every decision):

    LOGDIR/chosen-model/   the chosen model on the test split, made with its score (evaluate.py) and
                           remade whenever the score is: the confusion matrix (Images, and its
                           counts in Text), the most confidently wrong test images with their true
                           and predicted class and probability (Images), a PR curve (PR Curves:
                           one per class against the rest when there are more than two)
    LOGDIR/summary/        the Text tab's summary: settings, search, the ranked table, the test score

Each is written into a temporary folder and renamed into place, so TensorBoard never shows half of
one, and an older one never lingers beside a newer.
"""

import shutil
from pathlib import Path

import numpy as np

from hparam_sweep import metrics
from hparam_sweep.common import made, read_json, writing

CHOSEN_RUN = "chosen-model"
SUMMARY_RUN = "summary"
MOST_WRONG = 8  # test images shown in "most confidently wrong"
SHOWN_SIZE = 160  # a shown test image's side in pixels at least (the model's 32 px are unreadable)
PR_THRESHOLDS = 101


def replace_run(logdir, name, write):
    """Make run `name`: write() its summaries into a temporary folder's writer, then put that in
    place of the old run."""
    import tensorflow as tf

    target, tmp = Path(logdir) / name, Path(logdir) / f".{name}.tmp"
    with writing(f"cannot write the {name} run in {logdir}", tf.errors.OpError):
        shutil.rmtree(tmp, ignore_errors=True)
        made(tmp)
        writer = tf.summary.create_file_writer(str(tmp))
        with writer.as_default():
            write()
        writer.close()
        old = Path(logdir) / f".{name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)


def confusion(labels, predicted, count):
    """counts[true][predicted] over the test images."""
    counts = np.zeros((count, count), dtype=int)
    np.add.at(counts, (labels, predicted), 1)
    return counts


def table(header, rows):
    """A Markdown table, as the Text tab renders it."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def confusion_image(counts, classes):
    """The confusion matrix drawn as an RGB array: rows the true class, columns the predicted, each
    cell its count, shaded by its share of the row."""
    from PIL import Image, ImageDraw

    cell, label = 64, max(64, 8 * max(len(c) for c in classes) + 16)
    n = len(classes)
    image = Image.new("RGB", (label + n * cell, label + n * cell + 20), "white")
    draw = ImageDraw.Draw(image)
    draw.text((4, 4), "true \\ predicted", fill="black")
    for i, name in enumerate(classes):
        draw.text((label + i * cell + 4, label - 16), name[:12], fill="black")
        draw.text((4, label + i * cell + cell // 2 - 6), name, fill="black")
        total = max(1, counts[i].sum())
        for j in range(n):
            share = counts[i, j] / total
            shade = int(255 - 180 * share)
            box = (label + j * cell, label + i * cell, label + (j + 1) * cell - 1, label + (i + 1) * cell - 1)
            draw.rectangle(box, fill=(shade, shade, 255) if i == j else (255, shade, shade), outline="gray")
            draw.text((box[0] + 6, box[1] + cell // 2 - 6), str(counts[i, j]), fill="black")
    draw.text((4, label + n * cell + 4), f"{counts.trace()} of {counts.sum()} right", fill="black")
    return np.asarray(image)


def captioned(image, caption):
    """A test image enlarged to SHOWN_SIZE with its caption below, as an RGB array."""
    from PIL import Image, ImageDraw

    side = max(SHOWN_SIZE, image.shape[0])
    shown = Image.fromarray(image).resize((side, side), Image.NEAREST)
    out = Image.new("RGB", (side, side + 34), "white")
    out.paste(shown, (0, 0))
    draw = ImageDraw.Draw(out)
    for k, line in enumerate(caption.split("\n")):
        draw.text((4, side + 2 + 15 * k), line, fill="black")
    return np.asarray(out)


def most_confidently_wrong(images, labels, probabilities, classes, names=None):
    """The wrong predictions, most confident first: [(index, caption)], at most MOST_WRONG."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:MOST_WRONG]
    return [(int(i), f"true {classes[labels[i]]}, predicted {classes[predicted[i]]} "
                     f"({probabilities[i, predicted[i]]:.2f})" + (f"\n{names[i]}" if names is not None else ""))
            for i in wrong]


def write_chosen_run(logdir, trial, images, labels, probabilities, classes, names=None):
    """LOGDIR/chosen-model: trial's model on the test images (uint8 as the model took them), their
    int labels and its probabilities; `names` the test files, shown under each wrong one."""
    import tensorflow as tf
    from tensorboard.plugins.pr_curve import summary as pr_curve

    predicted = probabilities.argmax(axis=1)
    counts = confusion(labels, predicted, len(classes))
    wrong = most_confidently_wrong(images, labels, probabilities, classes, names)

    def write():
        tf.summary.image("confusion matrix", confusion_image(counts, classes)[None], step=0)
        rows = [[f"**{name}**", *counts[i], f"{counts[i, i] / max(1, counts[i].sum()):.4f}"]
                for i, name in enumerate(classes)]
        tf.summary.text("confusion counts", f"{trial} on the test split: rows the true class, columns the "
                        f"predicted one.\n\n" + table(["true \\ predicted", *classes, "accuracy"], rows), step=0)
        if wrong:
            tf.summary.image("most confidently wrong", np.stack([captioned(images[i], c) for i, c in wrong]),
                             step=0, max_outputs=MOST_WRONG)
            tf.summary.text("most confidently wrong, listed", table(
                ["", "test image"], [[k, c.replace("\n", " ")] for k, (_, c) in enumerate(wrong, 1)]), step=0)
        positives = classes[1:] if len(classes) == 2 else classes  # two classes: one curve, for the second
        for name in positives:
            k = classes.index(name)
            summary = pr_curve.pb(name,  # its tag: NAME/pr_curves
                                  labels == k, probabilities[:, k].astype(np.float32),
                                  num_thresholds=PR_THRESHOLDS, display_name=f"PR curve: {name} against the rest")
            tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=0)

    replace_run(logdir, CHOSEN_RUN, write)


def summary_text(experiment, ranked, score):
    """The Text tab's summary as Markdown: what was searched how, the ranking, the test score."""
    settings = experiment.get("settings", {}) if experiment else {}
    searched = experiment.get("search", {}) if experiment else {}
    parts = ["## Settings", table(["setting", "value"], sorted(settings.items())),
             "## Search", table(["", "value"], sorted(searched.items()))]
    names = sorted({k for r in ranked for k in r.get("hparams", {})})
    rows = []
    for rank, r in enumerate(ranked, 1):
        m = r.get("metrics") or {}
        shown = [f"{m[k]:.4f}" if k in m else "-" for k in (metrics.ACCURACY, metrics.VAL_LOSS)]
        values = [f"{r['hparams'].get(k):.4g}" if isinstance(r["hparams"].get(k), float) else r["hparams"].get(k)
                  for k in names]
        rows.append([rank, r["name"], *values, *shown, m.get(metrics.EPOCHS, "-"), r["status"]])
    parts += ["## Ranking (by the objective, as results.csv)",
              table(["rank", "trial", *names, "val accuracy", "val loss", "epochs", "status"], rows)]
    if score:
        low, high = score["interval_95"]
        parts += ["## Test score", f"The chosen model, **{score['trial']}**, on the test split, which no trial and no "
                  f"decision saw: accuracy **{score['test_accuracy']:.4f}** (95% interval {low:.3f}-{high:.3f}, "
                  f"{score['correct']} of {score['count']} images). Quote this one: the validation accuracy chose "
                  f"the model, so it flatters it."]
    return "\n\n".join(parts)


def write_summary(logdir, ranked, score):
    """LOGDIR/summary: the experiment summary (summary_text), from experiment.json and the ranking."""
    import tensorflow as tf

    from hparam_sweep.experiment import EXPERIMENT_FILE

    text = summary_text(read_json(Path(logdir) / EXPERIMENT_FILE), ranked, score)
    replace_run(logdir, SUMMARY_RUN, lambda: tf.summary.text("experiment summary", text, step=0))
