"""What a trial's run folder holds for TensorBoard, written and read here only:

    history.csv           one row per finished epoch (Keras CSVLogger's columns)
    train/ validation/    the epoch curves: each history column as a scalar, named as the Keras
                          TensorBoard callback names it (loss -> train/epoch_loss, val_loss ->
                          validation/epoch_loss), so that metrics.METRICS link to them
    events.out.tfevents*  the HParams session: start (hparams) and end (status, summary metrics),
                          and the model's Keras (conceptual) graph for the Graphs tab, once

trial.py writes them (`write_session` at a trial's start and end, `EpochLog` in step with its
backup) and reads history.csv back for the record's per-epoch curve; `read_curves` reads the curves
as TensorBoard does. Anything else a user or a callback logs into these folders (histograms,
images, text, scalars of their own) is TensorBoard's to show and ignored here.
"""

import csv
from pathlib import Path

import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.graph import metadata as graph_metadata
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import summary as hp_summary
from tensorboard.plugins.scalar import metadata as scalar_metadata

from hparam_sweep import hooks
from hparam_sweep.common import replaced, writing

HISTORY_FILE = "history.csv"
CURVE_GROUPS = ("train", "validation")  # the Keras TensorBoard callback's folders


def read_history(path):
    """Per-epoch rows of history.csv, one per epoch (a repeated epoch keeps its last row)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = {int(row["epoch"]): row for row in csv.DictReader(f)}
    return [{k: float(v) for k, v in rows[e].items()} for e in sorted(rows)]


def write_history(path, rows):
    """Rewrite history.csv from rows (CSVLogger's columns), atomically.

    Not Keras' CSVLogger: it appends, so an epoch replayed after a kill would get a second row;
    the file is rewritten here from the backup's own rows instead.
    """
    with replaced(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["epoch"] + sorted({k for row in rows for k in row} - {"epoch"}))
        writer.writeheader()
        writer.writerows(rows)


def curve_points(rows):
    """The epoch curves' points that history rows make: (group, tag, epoch, value), group by group."""
    return [
        (group, "epoch_" + key.removeprefix(prefix), int(row["epoch"]), value)
        for group, prefix in zip(CURVE_GROUPS, ("", "val_"))
        for row in rows
        for key, value in row.items()
        if key != "epoch" and key.startswith("val_") == (group == "validation")
    ]


def read_curves(run_dir):
    """{(group, tag): [(epoch, value), ...]} of the epoch curves under run_dir/{train,validation},
    as TensorBoard reads them: every point of every event file, duplicates included, in file order.

    Only the scalars that history.csv's columns make: a histogram, an image, text or a scalar of
    someone else's there is not a curve of this trial's, and never fails it.
    """
    run_dir = Path(run_dir)
    ours = {(group, tag) for group, tag, _, _ in curve_points(read_history(run_dir / HISTORY_FILE))}
    curves = {}
    for group in CURVE_GROUPS:
        if not (run_dir / group).is_dir():
            continue
        events = event_accumulator.EventAccumulator(
            str(run_dir / group), size_guidance={event_accumulator.TENSORS: 0}, purge_orphaned_data=False
        ).Reload()
        for tag in events.Tags()[event_accumulator.TENSORS]:
            if (group, tag) in ours and events.SummaryMetadata(tag).plugin_data.plugin_name == scalar_metadata.PLUGIN_NAME:
                curves[(group, tag)] = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]
    return curves


class EpochLog:
    """history.csv and the epoch curves of run_dir, brought in line with the finished epochs' rows."""

    def __init__(self, run_dir):
        self.run_dir, self.writers = Path(run_dir), {}

    def write(self, rows):
        """Write what rows hold and the logs lack: a point already in an event file is never
        written twice, so a resume neither repeats nor loses one."""
        if rows or (self.run_dir / HISTORY_FILE).exists():
            write_history(self.run_dir / HISTORY_FILE, rows)
        hooks.point("history")
        logged = {(group, tag, step) for (group, tag), points in read_curves(self.run_dir).items() for step, _ in points}
        missing = [point for point in curve_points(rows) if point[:3] not in logged]
        for group in CURVE_GROUPS:
            points = [(tag, epoch, value) for g, tag, epoch, value in missing if g == group]
            if points:
                with writing(f"cannot write the curves in {self.run_dir / group}", tf.errors.OpError):
                    if group not in self.writers:
                        self.writers[group] = tf.summary.create_file_writer(str(self.run_dir / group))
                    with self.writers[group].as_default():
                        for tag, epoch, value in points:
                            tf.summary.scalar(tag, value, step=epoch)
                    self.writers[group].flush()

    def close(self):
        for group, writer in self.writers.items():
            with writing(f"cannot write the curves in {self.run_dir / group}", tf.errors.OpError):
                writer.close()


def write_session(run_dir, values, name, status=None, summary=None):
    """Write the HParams session start, or its end with a status and the summary metrics.

    hp.KerasCallback is not used: it always ends a session with STATUS_SUCCESS, and a failed
    or NaN trial must show as STATUS_FAILURE.
    """
    with writing(f"cannot write the HParams session in {run_dir}", tf.errors.OpError):
        writer = tf.summary.create_file_writer(str(run_dir))
        with writer.as_default():
            if status is None:
                hp.hparams(values, trial_id=name)
            else:
                for tag, value in (summary or {}).items():
                    tf.summary.scalar(tag, value, step=0)
                pb = hp_summary.session_end_pb(status)
                tf.summary.experimental.write_raw_pb(pb.SerializeToString(), step=0)
        writer.close()


GRAPH_TAG = "keras"  # the tag keras.callbacks.TensorBoard gives the model's graph


def has_graph(run_dir):
    """Whether run_dir's own event files hold the model's Keras graph already."""
    events = event_accumulator.EventAccumulator(str(run_dir), size_guidance={event_accumulator.TENSORS: 0}).Reload()
    return any(events.SummaryMetadata(tag).plugin_data.plugin_name == graph_metadata.PLUGIN_NAME_KERAS_MODEL
               for tag in events.Tags()[event_accumulator.TENSORS])


def write_graph(run_dir, model):
    """The model's Keras graph for the Graphs tab, as keras.callbacks.TensorBoard writes it (the model's
    JSON config under the graph_keras_model plugin), once per run folder: a resumed trial adds none.
    A model whose config is not JSON (a subclassed model without get_config) has no graph, as in Keras.
    Written here rather than by that callback, which would also write its own epoch_* points."""
    if has_graph(run_dir):
        return
    try:
        config = model.to_json()
    except Exception:  # noqa: BLE001 - as Keras: a model that cannot say its config has no graph
        return
    metadata = tf.compat.v1.SummaryMetadata()
    metadata.plugin_data.plugin_name = graph_metadata.PLUGIN_NAME_KERAS_MODEL
    metadata.plugin_data.content = b"1"
    with writing(f"cannot write the model's graph in {run_dir}", tf.errors.OpError):
        writer = tf.summary.create_file_writer(str(run_dir))
        with writer.as_default():
            tf.summary.write(GRAPH_TAG, tf.constant(config), step=0, metadata=metadata)
        writer.close()
