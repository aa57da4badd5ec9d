"""One trial in its run folder, from start to end: `run` is what every runner calls.

A trial trains one hparam combination to a given epoch count and leaves in its run folder:

    trial.json            hparams, settings, status, metrics, error, versions, device, times
    history.csv           one row per epoch (Keras CSVLogger)
    train/ validation/    the epoch curves (Keras TensorBoard callback)
    events.out.tfevents*  the HParams session: start (hparams) and end (status, summary metrics)
    backup/               the training state while the trial is unfinished (BackupAndRestore)

Calling `run` again on the same folder continues from the backup: after a crash, or with a
higher epoch count once the trial has reached a lower one.
"""

import csv
import datetime
import gc
import math
import os
import platform
import shlex
import shutil
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import summary as hp_summary

import hparams as H
import pipeline
from common import read_json, write_json
from model import build_model

TRIAL_FILE = "trial.json"
HISTORY_FILE = "history.csv"
BACKUP_DIR = "backup"
FINISHED = ("success", "failure")


@dataclass(frozen=True)
class Settings:
    """Everything besides the hparams that decides a trial's result; trials are comparable
    (and reusable on a rerun) only when their Settings are equal."""

    data: str
    data_fingerprint: str
    image_size: int
    batch_size: int
    epochs: int
    steps_per_epoch: int
    seed: int
    deterministic: bool
    mixed_precision: bool
    xla: bool
    augment_in_model: bool


class TrialFailed(Exception):
    """A trial that ran but produced no usable model (its loss went NaN)."""


class _FirstEpoch(keras.callbacks.Callback):
    """Remembers the epoch training started at: above 0 when BackupAndRestore resumed it."""

    def __init__(self):
        super().__init__()
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.epoch is None:
            self.epoch = epoch


def read_history(path):
    """Per-epoch rows of a CSVLogger file, one per epoch (a repeated epoch keeps its last row)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = {int(row["epoch"]): row for row in csv.DictReader(f)}
    return [{k: float(v) for k, v in rows[e].items()} for e in sorted(rows)]


def epochs_trained(record):
    """How many epochs a finished trial's record says it trained (older records: all of them)."""
    return record.get("epochs", record["settings"]["epochs"])


def fit(values, settings, data, run_dir, epochs, verbose="auto"):
    """Train up to `epochs` epochs in run_dir and return (model, metrics, resumed_from_epoch).

    An interrupted or earlier-stopped trial continues from its backup; the backup is kept
    until the trial reaches settings.epochs. A NaN loss stops training and raises TrialFailed.
    """
    start = time.monotonic()
    train_set, val_set = data
    # Set per trial: keras.backend.clear_session() between trials resets the dtype policy.
    keras.mixed_precision.set_global_policy("mixed_float16" if settings.mixed_precision else "float32")
    keras.utils.set_random_seed(settings.seed)  # same seed, same initial weights and dropout masks
    augment_seed = settings.seed if settings.augment_in_model else None
    model = build_model(values, settings.image_size, xla=settings.xla, augment_seed=augment_seed)
    first_epoch = _FirstEpoch()
    callbacks = [
        # CSVLogger before BackupAndRestore: a kill between the two repeats an epoch (its row is
        # then replaced, see read_history) rather than losing its row.
        keras.callbacks.CSVLogger(run_dir / HISTORY_FILE, append=True),
        keras.callbacks.BackupAndRestore(
            run_dir / BACKUP_DIR,
            double_checkpoint=True,  # survives a kill mid-save
            delete_checkpoint=epochs >= settings.epochs,  # kept while the trial may be continued
        ),
        keras.callbacks.TensorBoard(run_dir, write_graph=False, profile_batch=0),
        keras.callbacks.TerminateOnNaN(),
        first_epoch,
    ]
    model.fit(
        pipeline.train_dataset(train_set, settings.batch_size, settings.seed, augmented=not settings.augment_in_model),
        steps_per_epoch=settings.steps_per_epoch,
        epochs=epochs,
        validation_data=pipeline.validation_dataset(val_set, settings.batch_size),
        callbacks=callbacks,
        shuffle=False,  # train_dataset shuffles, seeded
        verbose=verbose,
    )
    history = read_history(run_dir / HISTORY_FILE)
    bad = [i for i, row in enumerate(history) if not math.isfinite(row["loss"])]
    if model.stop_training or bad or not history:
        raise TrialFailed(f"loss became NaN in epoch {(bad or [len(history)])[0] + 1}")
    last = history[-1]
    metrics = {
        H.METRIC_ACCURACY: last["val_accuracy"],
        H.METRIC_BEST_ACCURACY: max(row["val_accuracy"] for row in history),
        H.METRIC_VAL_LOSS: last["val_loss"],
        H.METRIC_WALL_TIME: round(time.monotonic() - start, 3),
    }
    return model, metrics, first_epoch.epoch or 0


def run(values, settings, data, run_dir, epochs=None, verbose="auto", on_success=None):
    """Run one trial in run_dir up to `epochs` (default: settings.epochs) and return its record.

    data is the (train, validation) pair of pipeline.ImageSets. A raised exception or a NaN loss
    makes the trial a failure with its reason; Ctrl-C marks it interrupted and propagates.
    on_success(model, record) is called with the trained model before its memory is freed
    (the experiment keeps the best one); what it raises propagates, it is not the trial's fault.
    """
    epochs = settings.epochs if epochs is None else epochs
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    name = run_dir.name
    earlier = read_json(run_dir / TRIAL_FILE)  # an interrupted or earlier-stopped attempt, if any
    record = {
        "name": name, "hparams": values, "status": "running", "settings": asdict(settings),
        "seed": settings.seed, "command": shlex.join([sys.executable] + sys.argv), "environment": environment(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "metrics": {}, "error": None, "attempts": (earlier or {}).get("attempts", 0) + 1,
    }
    write_json(run_dir / TRIAL_FILE, record)
    write_session(run_dir, values, name)
    model = None
    registered = set(gradient_registry())
    try:
        try:
            model, metrics, record["resumed_from_epoch"] = fit(values, settings, data, run_dir, epochs, verbose)
            metrics[H.METRIC_EPOCHS] = epochs
            # Every epoch's validation metrics, so that a search can compare trials at any earlier epoch.
            curve = [{H.METRIC_ACCURACY: row["val_accuracy"], H.METRIC_VAL_LOSS: row["val_loss"]}
                     for row in read_history(run_dir / HISTORY_FILE)[:epochs]]
            record.update(status="success", metrics=metrics, epochs=epochs, curve=curve,
                          dtype_policy=model.dtype_policy.name)
        except KeyboardInterrupt:
            record["status"] = "interrupted"
            write_json(run_dir / TRIAL_FILE, record)
            raise
        except Exception as e:  # noqa: BLE001 - one bad trial (NaN, OOM, a bad value) must not end the grid
            record.update(status="failure", error=f"{type(e).__name__}: {e}".splitlines()[0])
            record["traceback"] = traceback.format_exc()
        if model is not None and on_success is not None:
            on_success(model, record)
        status = api_pb2.STATUS_SUCCESS if record["status"] == "success" else api_pb2.STATUS_FAILURE
        write_session(run_dir, values, name, status, record["metrics"])
    finally:
        del model
        release_memory(registered)
    record["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    record["rss_mb"] = resident_mb()
    write_json(run_dir / TRIAL_FILE, record)
    return record


def discard_backup(run_dir):
    """Delete a stopped trial's training state, once no search will continue it."""
    shutil.rmtree(Path(run_dir) / BACKUP_DIR, ignore_errors=True)


def load(run_dir):
    """The trial.json record in run_dir, or None."""
    return read_json(Path(run_dir) / TRIAL_FILE)


def write_session(run_dir, values, name, status=None, metrics=None):
    """Write the HParams session start, or its end with a status and the summary metrics.

    hp.KerasCallback is not used: it always ends a session with STATUS_SUCCESS, and a failed
    or NaN trial must show as STATUS_FAILURE.
    """
    writer = tf.summary.create_file_writer(str(run_dir))
    with writer.as_default():
        if status is None:
            hp.hparams(values, trial_id=name)
        else:
            for tag, value in (metrics or {}).items():
                tf.summary.scalar(tag, value, step=0)
            pb = hp_summary.session_end_pb(status)
            tf.summary.experimental.write_raw_pb(pb.SerializeToString(), step=0)
    writer.close()


def gpu_names():
    """The names of the GPUs TensorFlow sees (empty on a CPU-only machine)."""
    gpus = tf.config.list_physical_devices("GPU")
    return [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]


def environment():
    """Versions and device: what is needed to reproduce a trial's numbers."""
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "device": ", ".join(gpu_names()) or f"CPU ({platform.machine()}, {os.cpu_count()} cores)",
        "platform": platform.platform(),
    }


def gradient_registry():
    """TensorFlow's global gradient registry (a private dict; empty if a TF release moves it)."""
    from tensorflow.python.framework import ops

    return getattr(getattr(ops, "gradient_registry", None), "_registry", {})


def release_memory(registered_before):
    """Free what a finished trial leaves in TensorFlow's global state.

    Each tf.custom_gradient Keras traces adds a 'CustomGradient-N' entry to TF's global gradient
    registry that is never removed; its closure keeps the trial's traced graphs alive (about
    75 MB a trial, whatever the model size), and clear_session() does not touch it. Removing the
    entries the trial added keeps a 36-trial grid's memory flat.
    """
    registry = gradient_registry()
    for name in set(registry) - registered_before:
        if name.startswith("CustomGradient-"):
            del registry[name]
    keras.backend.clear_session()
    gc.collect()


def resident_mb():
    """This process's resident memory now, in MiB (Linux; None elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
