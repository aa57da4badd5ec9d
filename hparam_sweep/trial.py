"""One trial in its run folder, from start to end: `run` is what every runner calls.

A trial trains one hparam combination to a given epoch count and leaves in its run folder:

    trial.json            hparams, settings, status, metrics, error, versions, device, times
    history.csv           one row per epoch (Keras CSVLogger's columns)
    train/ validation/    the epoch curves (the Keras TensorBoard callback's tags); the weight histograms
    events.out.tfevents*  the HParams session: start (hparams) and end (status, summary metrics); the graphs
    model.keras           the trained model once the trial is fully trained (`keep_model`)
    backup/               the training state while the trial is unfinished

runlog.py writes and reads the logs TensorBoard shows (history.csv, the curves, the histograms, the
session, the graphs); backup.py the training state (`Backup`, which keeps the logs in step with it).

Calling `run` again on the same folder continues from the backup, at the step it was taken:
after a crash, or with a higher epoch count once the trial has reached a lower one. Under
--deterministic the result is bit-identical to an uninterrupted run's.
"""

import datetime
import gc
import math
import os
import platform
import shlex
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api_pb2

from hparam_sweep import device, hooks, metrics, pipeline
# BACKUP_DIR, TIME_FILE: also trial.BACKUP_DIR, as a run folder's other names are trial.X
from hparam_sweep.backup import BACKUP_DIR, TIME_FILE, Backup, discard_backup  # noqa: F401
from hparam_sweep.common import (BACKUP_MINUTES, CLASS_DIRS, RunStopped, keep_classes, made, read_json, replaced,
                                 write_json)
from hparam_sweep.model import inference_model
from hparam_sweep.modelfile import build_model
from hparam_sweep.naming import TRIAL_FILE, trial_name  # noqa: F401 - trial.trial_name: a grid trial's name
from hparam_sweep.runlog import HISTORY_FILE, read_history, write_graph, write_op_graph, write_session

MODEL_FILE = "model.keras"  # a fully trained trial's model, as best_model.keras holds it


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
    classes: tuple = CLASS_DIRS  # the class folders of data/train, sorted: the model's outputs, in order
    model_file: str = ""  # --model-file's absolute path; "" for the package's CNN
    model_sha256: str = ""  # the model file's text (modelfile.fingerprint: why the text)
    early_stopping: int = 0  # patience in epochs (--early-stopping); 0: every trial trains all its epochs
    objective: str = metrics.DEFAULT_OBJECTIVE.name  # what ranks trials and early stopping watches (--objective)

    def record(self):
        """The settings as trial.json and experiment.json hold them (JSON: lists, not tuples). A
        field added after the first releases (ADDED_LATER) is left out while it has its default,
        which means what those releases did: their logdirs still hold comparable trials, and
        resume in place."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
                if not (k in ADDED_LATER and v == ADDED_LATER[k])}


# Settings fields added after the first releases: {name: the default that means the old behaviour}.
# A new field gets a default here and in Settings.
ADDED_LATER = {"classes": CLASS_DIRS, "model_file": "", "model_sha256": "", "early_stopping": 0,
               "objective": metrics.DEFAULT_OBJECTIVE.name}


class TrialFailed(Exception):
    """A trial that ran but produced no usable model (its loss went NaN)."""


def stopped_early_at(settings, rows):
    """The epoch (from 1) at which --early-stopping ends a trial with these history rows, or None.
    Its whole state (the best value so far, the epochs since) is in the rows: nothing else to back up."""
    if not settings.early_stopping:
        return None
    objective = metrics.objective(settings.objective)
    return objective.stopped_at([row[objective.name] for row in rows], settings.early_stopping)


def fit(values, settings, data, run_dir, epochs, verbose="auto", backup_minutes=BACKUP_MINUTES, histograms=True):
    """Train up to `epochs` epochs in run_dir; return (model, summary metrics, resumed_from_step, backup_seconds).

    An interrupted or earlier-stopped trial continues from its backup, at the step it was backed up
    at; `run` deletes the backup once the trial is finished. A NaN loss stops training and raises
    TrialFailed. With histograms, each epoch end logs the weights' histograms (runlog.EpochLog).
    With settings.early_stopping, training ends after the epoch that stopped_early_at
    names; the model is then the last epoch's (the one the summary metrics describe), and the
    summary says where it stopped (metrics.STOPPED_EARLY_AT).
    """
    start = time.monotonic()
    train_set, val_set = data
    # Keras names layers and weights from process-wide counters (the second model a process builds is
    # sequential_1): reset, every trial's weights have the same names, and so the same histogram tags,
    # in whichever process trains or resumes it.
    keras.backend.clear_session()
    # Set per trial: keras.backend.clear_session() between trials resets the dtype policy.
    keras.mixed_precision.set_global_policy("mixed_float16" if settings.mixed_precision else "float32")
    keras.utils.set_random_seed(settings.seed)  # same seed, same initial weights and dropout masks
    model = build_model(values, settings)
    compile_objective(model, metrics.objective(settings.objective))
    write_graph(run_dir, model)
    validation = pipeline.validation_dataset(val_set, settings.batch_size)
    steps = settings.steps_per_epoch
    sample_batch = next(iter(validation))
    backup = Backup(model, run_dir, steps, backup_minutes, sample_batch, start,
                    lambda rows: stopped_early_at(settings, rows), histograms)
    write_op_graph(run_dir, model, sample_batch)  # after Backup, which builds the optimizer and metrics
    resumed_from = int(backup.step)
    try:
        # A backup that holds the epoch early stopping ended at (killed before trial.json said so) trains no more.
        while (int(backup.step) < epochs * steps and not model.stop_training
               and stopped_early_at(settings, backup.rows()) is None):
            epoch, done = divmod(int(backup.step), steps)
            # An interrupted epoch is finished on its own (fewer steps), the later ones in one go.
            model.fit(
                pipeline.train_dataset(train_set, settings.batch_size, settings.seed, start_step=int(backup.step),
                                       augmented=not settings.augment_in_model),
                steps_per_epoch=steps - done,
                initial_epoch=epoch,
                epochs=epoch + 1 if done else epochs,
                validation_data=validation,
                callbacks=[keras.callbacks.TerminateOnNaN(), backup],  # in this order: no backup of a NaN step
                shuffle=False,  # train_dataset shuffles, seeded
                verbose=verbose,
            )
    finally:
        backup.close()
    # A backup can be ahead of `epochs`: a halving trial promoted past a rung, killed, and asked for
    # that rung again on the rerun. Its metrics are those of epoch `epochs`, as the rung was decided.
    history = backup.rows()[:epochs]
    stopped_at = stopped_early_at(settings, history)
    bad = [i for i, row in enumerate(history) if not math.isfinite(row["loss"])]
    if (model.stop_training and stopped_at is None) or bad or not history:
        raise TrialFailed(f"loss became NaN in epoch {(bad or [len(history)])[0] + 1}")
    summary = {
        **epoch_metrics(history[-1]),
        metrics.BEST_ACCURACY: max(row["val_accuracy"] for row in history),
        metrics.WALL_TIME: round(backup.seconds_trained(), 3),  # across rungs and attempts
        metrics.EPOCHS: len(history),
        # Stopped at the last epoch, a trial trained all its epochs: it did not stop early.
        **({metrics.STOPPED_EARLY_AT: stopped_at} if stopped_at is not None and stopped_at < settings.epochs else {}),
    }
    return model, summary, resumed_from, round(backup.seconds_saving, 3)


def epoch_metrics(row):
    """An epoch's validation metrics under their summary names ({metrics.ACCURACY: row["val_accuracy"], ...}):
    those of every objective the row holds, so that a search can rank trials by any of them at any epoch."""
    return {o.key: row[o.name] for o in metrics.OBJECTIVES.values() if o.name in row}


def compile_objective(model, objective):
    """Compile into the model the Keras metric the objective needs besides its own (val_auc: keras.metrics.AUC,
    one-vs-rest for each class and averaged), with its optimizer, loss and all else as they were."""
    if objective.keras_metric is None:
        return
    config = keras.saving.deserialize_keras_object(model.get_compile_config())
    compiled = list(config["metrics"] or [])
    if objective.keras_metric not in [getattr(m, "name", m) for m in compiled]:
        metric = keras.metrics.AUC(name=objective.keras_metric, multi_label=True, num_labels=model.output_shape[-1])
        model.compile(**{**config, "optimizer": model.optimizer, "metrics": [*compiled, metric]})


def run(values, settings, data, run_dir, epochs=None, verbose="auto", backup_minutes=BACKUP_MINUTES, origin=None,
        histograms=True):
    """Run one trial in run_dir up to `epochs` (default: settings.epochs) and return its record
    (which holds `origin`'s fields: the sampler that proposed the trial and its index there).

    data is the (train, validation) pair of pipeline.ImageSets. A raised exception or a NaN loss
    makes the trial a failure with its reason; Ctrl-C marks it interrupted and propagates.
    A fully trained trial keeps its model (keep_model). A write into the run folder that fails (no
    space, a write refused: common.writing) is not the trial's fault: it raises RunStopped and
    leaves the trial unfinished, with its last complete backup, for the rerun.
    The training state is backed up every `backup_minutes` and at each epoch end; with histograms
    (a display choice, not a setting: it changes no result), the weights are logged there too.
    """
    epochs = settings.epochs if epochs is None else epochs
    if settings.deterministic:
        tf.config.experimental.enable_op_determinism()
    run_dir = Path(run_dir)
    made(run_dir)
    name = run_dir.name
    earlier = read_json(run_dir / TRIAL_FILE)  # an interrupted or earlier-stopped attempt, if any
    record = {
        "name": name, "hparams": values, **(origin or {}), "status": "running", "settings": settings.record(),
        "seed": settings.seed, "command": shlex.join([sys.executable] + sys.argv), "environment": environment(),
        "started": now(),
        "metrics": {}, "error": None, "attempts": (earlier or {}).get("attempts", 0) + 1,
    }
    write_json(run_dir / TRIAL_FILE, record)
    write_session(run_dir, values, name)
    model = None
    registered = set(gradient_registry())
    try:
        try:
            model, summary, step, record["backup_s"] = fit(values, settings, data, run_dir, epochs, verbose,
                                                           backup_minutes, histograms)
            trained = summary[metrics.EPOCHS]
            # Every epoch's validation metrics, so that a search can compare trials at any earlier epoch.
            curve = [epoch_metrics(row) for row in read_history(run_dir / HISTORY_FILE)[:trained]]
            record.update(resumed_from_step=step, resumed_from_epoch=step // settings.steps_per_epoch)
            record.update(status="success", metrics=summary, epochs=trained, curve=curve,
                          dtype_policy=model.dtype_policy.name)
            if metrics.STOPPED_EARLY_AT in summary:
                record["stopped_early_at"] = summary[metrics.STOPPED_EARLY_AT]
            if epochs >= settings.epochs or "stopped_early_at" in record:
                hooks.point("trained")  # tests: trials that finish at the same moment
                keep_model(model, run_dir, settings.classes)
        except KeyboardInterrupt:
            record["status"] = "interrupted"
            write_json(run_dir / TRIAL_FILE, record)
            raise
        except RunStopped:  # not the trial's fault: it stays unfinished, with its backup, for the rerun
            raise
        except Exception as e:  # noqa: BLE001 - one bad trial (NaN, OOM, a bad value) must not end the grid
            record.update(status="failure", error=f"{type(e).__name__}: {e}".splitlines()[0])
            record["traceback"] = traceback.format_exc()
        done = record["status"] == "success" and (epochs >= settings.epochs or "stopped_early_at" in record)
        status = api_pb2.STATUS_SUCCESS if record["status"] == "success" else api_pb2.STATUS_FAILURE
        write_session(run_dir, values, name, status, record["metrics"])
    finally:
        del model
        release_memory(registered)
    record["finished"] = now()
    record["rss_mb"] = resident_mb()
    write_json(run_dir / TRIAL_FILE, record)
    # Deleted only once trial.json says the trial is finished: a kill before that resumes, not restarts.
    if record["status"] == "failure" or done:
        discard_backup(run_dir)
    return record


def keep_model(model, run_dir, classes):
    """Save a fully trained trial's model.inference_model as run_dir/model.keras (atomically), with
    the class names of its outputs inside (common.keep_classes), for best_model.keras and whoever
    wants this trial's model. A write that fails is RunStopped (common.writing); a model that cannot
    be saved (a model file's layer without a config) is the trial's failure, TrialFailed."""
    with replaced(run_dir / MODEL_FILE, f"cannot keep the trained model in {run_dir / MODEL_FILE}") as tmp:
        try:
            inference_model(model).save(tmp)
        except (OSError, RunStopped):
            raise
        except Exception as e:  # noqa: BLE001 - Keras raises many kinds (TypeError, ValueError, NotImplementedError)
            raise TrialFailed(f"the trained model cannot be saved ({type(e).__name__}: "
                              f"{(str(e).splitlines() or [''])[0][:300]})") from None
        keep_classes(tmp, classes)


def record_failure(values, settings, run_dir, error, origin=None):
    """Record as failed, with the reason, a trial that its runner lost for good (its worker process or
    machine died on every attempt), as `run` records a trial that raised: trial.json and the
    HParams session end STATUS_FAILURE. Returns the record."""
    run_dir = Path(run_dir)
    made(run_dir)
    name = run_dir.name
    record = read_json(run_dir / TRIAL_FILE)
    if record is None:  # lost before it wrote anything: the session needs its start too
        record = {"name": name, "hparams": values, **(origin or {}), "settings": settings.record(), "seed": settings.seed,
                  "started": now(), "attempts": 0}
        write_session(run_dir, values, name)
    record.update(status="failure", error=error, metrics={}, finished=now())
    write_session(run_dir, values, name, api_pb2.STATUS_FAILURE, {})
    write_json(run_dir / TRIAL_FILE, record)
    discard_backup(run_dir)
    return record


def now():
    """Local time with milliseconds: concurrent trials' start and end times must be comparable."""
    return datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")


def load(run_dir):
    """The trial.json record in run_dir, or None."""
    return read_json(Path(run_dir) / TRIAL_FILE)


def environment():
    """Versions and device: what is needed to reproduce a trial's numbers."""
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "device": ", ".join(device.gpu_names()) or f"CPU ({platform.machine()}, {os.cpu_count()} cores)",
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
