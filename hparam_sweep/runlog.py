"""What a trial's run folder holds for TensorBoard, written and read here only:

    history.csv           one row per finished epoch (Keras CSVLogger's columns)
    train/ validation/    the epoch curves: each history column as a scalar, named as the Keras
                          TensorBoard callback names it (loss -> train/epoch_loss, val_loss ->
                          validation/epoch_loss), so that metrics.METRICS link to them; and in
                          train/, each layer's weights as a histogram at each epoch end (the
                          Distributions and Histograms tabs; the callback's tags, WEIGHT/histogram)
    events.out.tfevents*  the HParams session: start (hparams) and end (status, summary metrics),
                          and, once each, for the Graphs tab: the model's Keras (conceptual) graph
                          and the op graph of its training step

trial.py writes them (`write_session` at a trial's start and end, `EpochLog` in step with its
backup, `write_graph` and `write_op_graph` once) and reads history.csv back for the record's per-epoch
curve; `read_curves` reads the curves as TensorBoard does. Anything else a user or a callback logs
into these folders (histograms, images, text, scalars of their own) is TensorBoard's to show and
ignored here. docs/tensorboard.md: every tab, and what the histograms and graphs cost.
"""

import contextlib
import csv
from pathlib import Path

import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.graph import metadata as graph_metadata
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import summary as hp_summary
from tensorboard.plugins.histogram import metadata as histogram_metadata
from tensorboard.plugins.histogram import summary_v2 as histogram_summary
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


def read_tensors(folder, plugin):
    """{tag: [(step, tensor as NumPy), ...]} of the plugin's summaries in folder's event files, as
    TensorBoard reads them: every point of every event file, duplicates included, in file order."""
    if not Path(folder).is_dir():
        return {}
    events = event_accumulator.EventAccumulator(
        str(folder), size_guidance={event_accumulator.TENSORS: 0}, purge_orphaned_data=False
    ).Reload()
    return {tag: [(e.step, tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)]
            for tag in events.Tags()[event_accumulator.TENSORS]
            if events.SummaryMetadata(tag).plugin_data.plugin_name == plugin}


def read_curves(run_dir):
    """{(group, tag): [(epoch, value), ...]} of the epoch curves under run_dir/{train,validation}
    (read_tensors: as TensorBoard reads them).

    Only the scalars that history.csv's columns make: a histogram, an image, text or a scalar of
    someone else's there is not a curve of this trial's, and never fails it.
    """
    run_dir = Path(run_dir)
    ours = {(group, tag) for group, tag, _, _ in curve_points(read_history(run_dir / HISTORY_FILE))}
    return {(group, tag): [(step, float(value)) for step, value in points]
            for group in CURVE_GROUPS
            for tag, points in read_tensors(run_dir / group, scalar_metadata.PLUGIN_NAME).items()
            if (group, tag) in ours}


WEIGHTS_SUFFIX = "/histogram"  # a weight histogram's tag: WEIGHT_PATH/histogram, as keras.callbacks.TensorBoard has it


def weight_tags(model):
    """{histogram tag: weight} for each layer's weights."""
    return {weight.path.replace(":", "_") + WEIGHTS_SUFFIX: weight
            for layer in model.layers for weight in layer.weights}


def weight_buckets(weight):
    """A weight's histogram as TensorBoard's histogram summary makes it: 30 equal-width buckets from
    the lowest value to the highest, rows of [left edge, right edge, count] (a value on an edge may
    fall on its other side; a constant weight: all in the last one, edges at its value), counted on
    the CPU, so the same on any device.

    By hand because tf.summary.histogram counts through a one-hot matrix of the weight's size by 30
    in float64: for the 90M-value dense kernel of the tutorial's CNN at 150 px, 21 GB every epoch."""
    count = histogram_summary.DEFAULT_BUCKET_COUNT
    with tf.device("CPU:0"):
        data = tf.reshape(tf.cast(weight, tf.float32), [-1])
        if tf.size(data) == 0:
            return tf.zeros((count, 3), tf.float64)
        low, high = tf.reduce_min(data), tf.reduce_max(data)
        if low == high:
            counts = tf.concat([tf.zeros(count - 1, tf.int64), [tf.size(data, tf.int64)]], 0)
            edges = tf.fill([count + 1], tf.cast(low, tf.float64))
        else:
            counts = tf.histogram_fixed_width(data, tf.stack([low, high]), nbins=count, dtype=tf.int64)
            edges = tf.linspace(tf.cast(low, tf.float64), tf.cast(high, tf.float64), count + 1)
        return tf.stack([edges[:-1], edges[1:], tf.cast(counts, tf.float64)], axis=1)


def read_weight_histograms(run_dir, model=None):
    """{tag: [(epoch, buckets), ...]} of the weight histograms in run_dir/train (read_tensors): the
    model's weights' tags when a model is given, else every tag named like one."""
    histograms = read_tensors(Path(run_dir) / "train", histogram_metadata.PLUGIN_NAME)
    wanted = weight_tags(model) if model is not None else [tag for tag in histograms if tag.endswith(WEIGHTS_SUFFIX)]
    return {tag: histograms[tag] for tag in wanted if tag in histograms}


class EpochLog:
    """history.csv, the epoch curves and the weight histograms of run_dir, brought in line with the
    finished epochs' rows."""

    def __init__(self, run_dir):
        self.run_dir, self.writers = Path(run_dir), {}

    def write(self, rows, model=None):
        """Write what rows hold and the logs lack, and, given the model as it is at the end of the
        last row's epoch, its weights' histograms at that epoch if they are not there yet: a point
        already in an event file is never written twice, so a resume neither repeats nor loses one."""
        if rows or (self.run_dir / HISTORY_FILE).exists():
            write_history(self.run_dir / HISTORY_FILE, rows)
        hooks.point("history")
        logged = {(group, tag, step)
                  for (group, tag), points in read_curves(self.run_dir).items() for step, _ in points}
        missing = [point for point in curve_points(rows) if point[:3] not in logged]
        for group in CURVE_GROUPS:
            points = [(tag, epoch, value) for g, tag, epoch, value in missing if g == group]
            if points:
                with self.writer(group, "curves"):
                    for tag, epoch, value in points:
                        tf.summary.scalar(tag, value, step=epoch)
        if model is not None and rows:
            self.write_histograms(model, int(rows[-1]["epoch"]))

    def write_histograms(self, model, epoch):
        """The histograms of the model's weights at `epoch` that train/ lacks."""
        logged = {tag for tag, points in read_weight_histograms(self.run_dir, model).items()
                  if epoch in [step for step, _ in points]}
        weights = {tag: weight for tag, weight in weight_tags(model).items() if tag not in logged}
        if weights:
            hooks.point("histograms")
            metadata = histogram_metadata.create_summary_metadata(display_name=None, description=None)
            with self.writer("train", "weight histograms"):
                for tag, weight in weights.items():
                    tf.summary.write(tag, weight_buckets(weight), step=epoch, metadata=metadata)

    @contextlib.contextmanager
    def writer(self, group, what):
        """run_dir/group's event writer as the default while the block writes what, flushed after it."""
        with writing(f"cannot write the {what} in {self.run_dir / group}", tf.errors.OpError):
            if group not in self.writers:
                self.writers[group] = tf.summary.create_file_writer(str(self.run_dir / group))
            with self.writers[group].as_default():
                yield
            self.writers[group].flush()

    def close(self):
        for group, writer in self.writers.items():
            with writing(f"cannot write the logs in {self.run_dir / group}", tf.errors.OpError):
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
    return bool(read_tensors(run_dir, graph_metadata.PLUGIN_NAME_KERAS_MODEL))


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


def has_op_graph(run_dir):
    """Whether run_dir's own event files hold an op graph (a GraphDef) already."""
    return event_accumulator.EventAccumulator(str(run_dir)).Reload().Tags()[event_accumulator.GRAPH]


def write_op_graph(run_dir, model, sample_batch):
    """The op graph of one training step (forward pass, loss, gradients, optimizer update) for the
    Graphs tab, once per run folder: the model's train_step traced, not run, on inputs shaped like
    sample_batch (x, y), with the model built, its optimizer and metrics too (trial.Backup builds
    them): tracing creates no variable and changes no value. Keras 3 writes no op graph
    (keras.callbacks.TensorBoard lost it in 3.7), and a tf.summary.trace_on record of Keras' own
    first step holds every small function that step runs (IteratorGetNext, Optional...), each shown
    as a graph of its own. docs/tensorboard.md has the cost (a fraction of a second, under 100 KB)."""
    if has_op_graph(run_dir):
        return
    specs = [tf.TensorSpec((None, *part.shape[1:]), part.dtype) for part in sample_batch]

    def train_step(x, y):
        return model.train_step((x, y))

    graph = tf.function(train_step, autograph=False).get_concrete_function(*specs).graph
    with writing(f"cannot write the op graph in {run_dir}", tf.errors.OpError):
        writer = tf.summary.create_file_writer(str(run_dir))
        with writer.as_default():
            tf.summary.graph(graph)
        writer.close()
