"""A trial's training state in its run folder's backup/, and its logs kept in step with it.

    backup/ckpt-N.*        the weights, optimizer slots and step count, the metric accumulators of
                           the epoch in progress, the seed generators' states, the finished epochs' rows
    backup/checkpoint      which ckpt-N is the last complete one (CheckpointManager's record)
    backup/seconds.json    the seconds trained up to that backup, over all attempts and rungs

trial.fit trains with a Backup among its callbacks and continues from it; trial.run discards it
once the trial is finished.
"""

import contextlib
import json
import shutil
import time
from pathlib import Path

import keras
import tensorflow as tf

from hparam_sweep import hooks
from hparam_sweep.common import RunStopped, read_json, write_json, writing
from hparam_sweep.runlog import EpochLog

BACKUP_DIR = "backup"
TIME_FILE = "seconds.json"  # in BACKUP_DIR: the seconds trained up to the backup, over all attempts and rungs


class Backup(keras.callbacks.Callback):
    """The trial's whole training state in run_dir/backup, and its logs kept in step with it.

    The backup holds the weights, the optimizer's slots and step count, the metric accumulators of
    the epoch in progress, the dropout and augmentation seed generators' states, the global step
    and every finished epoch's row. It is written every `minutes` and at each epoch end (after
    validation); once `stopping(rows)` says early stopping ends the trial, training stops after
    that epoch's backup. An epoch's history.csv row and TensorBoard points are written only after the
    backup that holds them, and a resume first writes what the backup holds but the logs lack: a
    kill at any moment neither repeats nor loses a point. (Keras' BackupAndRestore restores the
    epoch, not the step, the metric accumulators or the logs.)
    """

    def __init__(self, model, run_dir, steps_per_epoch, minutes, sample_batch, started, stopping=lambda rows: None,
                 histograms=True):
        super().__init__()
        self.stopping, self.histograms = stopping, histograms
        self.run_dir, self.steps_per_epoch, self.seconds = run_dir, steps_per_epoch, minutes * 60
        self.started, self.seconds_before = started, 0.0  # this attempt's start; what earlier ones trained
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False)  # training steps done
        self.history = tf.Variable("[]")  # JSON list of the finished epochs' rows (exact floats)
        # Keras creates the optimizer's slots and the compiled metrics' accumulators at the first
        # step; create them now so that a backup can be restored into them.
        model.optimizer.build(model.trainable_variables)
        x, y = sample_batch
        model.compute_metrics(x, y, model(x, training=False))
        model.reset_metrics()
        # A flat list: tf.train.Checkpoint(model=...) finds none of a Keras 3 model's own variables.
        self.metrics = list(model.metrics_variables)
        state = list(model.variables) + list(model.optimizer.variables) + self.metrics
        self.checkpoint = tf.train.Checkpoint(state=state, step=self.step, history=self.history)
        # CheckpointManager writes a new backup beside the last one and deletes that one only once
        # the new one is complete and recorded (atomically) in backup/checkpoint.
        self.manager = tf.train.CheckpointManager(self.checkpoint, run_dir / BACKUP_DIR, max_to_keep=1)
        self.resumed_metrics = None
        if self.manager.latest_checkpoint:
            self.checkpoint.restore(self.manager.latest_checkpoint).assert_consumed()
            self.seconds_before = (read_json(run_dir / BACKUP_DIR / TIME_FILE) or {}).get("seconds", 0.0)
            if int(self.step) % steps_per_epoch:
                self.resumed_metrics = [v.numpy() for v in self.metrics]
        self.seconds_saving = 0.0
        self.saved_at = time.monotonic()
        self.log = EpochLog(run_dir)
        # Restored at an epoch end, the model is as that epoch left it: its histograms, if a kill came before them.
        at_epoch_end = int(self.step) == len(self.rows()) * steps_per_epoch
        self.log.write(self.rows(), model if histograms and at_epoch_end else None)

    def rows(self):
        """The finished epochs' history rows."""
        return json.loads(self.history.numpy())

    def seconds_trained(self):
        """The trial's training time so far: earlier attempts' and rungs' (as of their last backup) and this one's."""
        return self.seconds_before + time.monotonic() - self.started

    def save(self):
        start = time.monotonic()
        folder = self.run_dir / BACKUP_DIR
        try:
            with writing(f"cannot write the backup in {folder}", tf.errors.OpError):
                self.manager.save(checkpoint_number=int(self.step))
        except RunStopped:
            self.drop_unfinished()
            raise
        self.saved_at = time.monotonic()
        self.seconds_saving += self.saved_at - start
        write_json(folder / TIME_FILE, {"step": int(self.step), "seconds": self.seconds_trained()})
        hooks.point("backup")

    def drop_unfinished(self):
        """Delete what a failed save began beside the last complete backup, the one backup/checkpoint
        records and the rerun continues from: a ckpt-N_temp folder, a ckpt-N it did not record yet."""
        folder = self.run_dir / BACKUP_DIR
        latest = Path(tf.train.latest_checkpoint(str(folder)) or "none").name
        for path in folder.iterdir() if folder.is_dir() else []:
            if path.name in ("checkpoint", TIME_FILE) or path.name.startswith(latest + "."):
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()

    def on_epoch_begin(self, epoch, logs=None):
        if self.resumed_metrics is not None:  # fit has just reset the interrupted epoch's accumulators
            for variable, value in zip(self.metrics, self.resumed_metrics):
                variable.assign(value)
            self.resumed_metrics = None

    def on_train_batch_end(self, batch, logs=None):
        self.step.assign_add(1)
        # The epoch's last step is backed up after validation, with the epoch's row; nothing is
        # backed up once the loss is NaN.
        if (int(self.step) % self.steps_per_epoch and not self.model.stop_training
                and time.monotonic() - self.saved_at >= self.seconds):
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        rows = self.rows() + [{"epoch": epoch, **{k: float(v) for k, v in sorted(logs.items())}}]
        self.history.assign(json.dumps(rows))
        backed_up = not self.model.stop_training  # set by TerminateOnNaN: no backup (and no histograms) of a NaN epoch
        if backed_up:
            self.save()
            self.model.stop_training = self.stopping(rows) is not None
        self.log.write(rows, self.model if backed_up and self.histograms else None)

    def close(self):
        self.log.close()


def discard_backup(run_dir):
    """Delete a trial's training state, once nothing will continue it."""
    shutil.rmtree(Path(run_dir) / BACKUP_DIR, ignore_errors=True)
