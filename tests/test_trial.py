"""trial.run: one trial in its run folder, continued later at a higher epoch count."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import trial_outcome

from hparam_sweep import pipeline, trial
from hparam_sweep.common import RunStopped

VALUES = {"num_units": 8, "dropout": 0.1, "optimizer": "adam", "learning_rate": 0.01}


def settings(dataset, epochs=3, deterministic=False):
    return trial.Settings(data=str(dataset), data_fingerprint="test", image_size=24, batch_size=8, epochs=epochs,
                          steps_per_epoch=2, seed=1, deterministic=deterministic, mixed_precision=False, xla=False,
                          augment_in_model=False)


def test_a_stopped_trial_continues_where_it_stopped(dataset, tmp_path):
    data = pipeline.load_data(dataset, 24)
    run_dir = tmp_path / "adam"

    first = trial.run(VALUES, settings(dataset), data, run_dir, epochs=1, verbose=0)
    assert first["status"] == "success" and first["epochs"] == 1
    assert (run_dir / trial.BACKUP_DIR).is_dir()  # kept: the trial may be continued

    second = trial.run(VALUES, settings(dataset), data, run_dir, epochs=3, verbose=0)
    assert second["status"] == "success" and second["epochs"] == 3
    assert second["resumed_from_epoch"] == 1 and second["attempts"] == 2
    assert [int(row["epoch"]) for row in trial.read_history(run_dir / trial.HISTORY_FILE)] == [0, 1, 2]
    assert not (run_dir / trial.BACKUP_DIR).exists()  # reached settings.epochs: nothing left to continue
    assert trial.load(run_dir) == second


def test_a_trial_asked_for_an_earlier_epoch_than_its_backup_reports_that_epoch(dataset, tmp_path):
    """A halving trial promoted past rung 1 and killed in rung 2 is asked for rung 1 again on the
    rerun: its backup already holds epoch 2, and the record must still say epoch 1's metrics."""
    data = pipeline.load_data(dataset, 24)
    run_dir = tmp_path / "adam"
    trial.run(VALUES, settings(dataset), data, run_dir, epochs=2, verbose=0)
    epochs = trial.read_history(run_dir / trial.HISTORY_FILE)
    assert (epochs[0]["val_accuracy"], epochs[0]["val_loss"]) != (epochs[1]["val_accuracy"], epochs[1]["val_loss"])

    again = trial.run(VALUES, settings(dataset), data, run_dir, epochs=1, verbose=0)
    assert again["epochs"] == 1 and len(again["curve"]) == 1
    assert (again["metrics"]["accuracy"], again["metrics"]["val_loss"]) == (epochs[0]["val_accuracy"],
                                                                            epochs[0]["val_loss"])
    assert again["metrics"]["best_val_accuracy"] == epochs[0]["val_accuracy"]


class CountingClock:
    """trial.py's `time`, made a clock that moves one second each time it is read: durations become
    counts of readings (each training step reads it once), the same on any machine."""

    def __init__(self):
        self.now = 0.0

    def monotonic(self):
        self.now += 1.0
        return self.now


def test_wall_time_is_the_whole_training_time_across_rungs_and_attempts(dataset, tmp_path, monkeypatch):
    """A halving trial trained to epoch 2, then continued to 3 (a shorter attempt): its wall time
    counts both, not only the last one."""
    monkeypatch.setattr(trial, "time", CountingClock())
    data = pipeline.load_data(dataset, 24)
    first = trial.run(VALUES, settings(dataset), data, tmp_path / "adam", epochs=2, verbose=0)
    second = trial.run(VALUES, settings(dataset), data, tmp_path / "adam", epochs=3, verbose=0)
    assert second["metrics"]["wall_time_s"] > first["metrics"]["wall_time_s"]


def test_a_model_that_cannot_be_kept_is_not_the_trials_failure(dataset, tmp_path):
    """A fully trained trial keeps its model; a full disk there stops the run, it does not fail the trial."""
    data = pipeline.load_data(dataset, 24)
    (tmp_path / "t" / trial.MODEL_FILE).mkdir(parents=True)  # in the way, as a full disk would be
    with pytest.raises(RunStopped, match="cannot keep the trained model in"):
        trial.run(VALUES, settings(dataset, epochs=1), data, tmp_path / "t", verbose=0)
    assert trial.load(tmp_path / "t")["status"] == "running"  # not finished: the rerun finishes it
    assert (tmp_path / "t" / trial.BACKUP_DIR).is_dir()
    assert not (tmp_path / "t" / "model.tmp.keras").exists()  # the model written, not renamed: removed


def test_read_history_keeps_the_last_row_of_a_repeated_epoch(tmp_path):
    """A kill between the CSV row and the backup repeats an epoch: its second row wins, no epoch twice."""
    path = tmp_path / "history.csv"
    path.write_text("epoch,accuracy,loss\n0,0.5,0.9\n1,0.6,0.8\n1,0.7,0.7\n2,0.8,0.6\n")
    assert trial.read_history(path) == [{"epoch": 0.0, "accuracy": 0.5, "loss": 0.9},
                                        {"epoch": 1.0, "accuracy": 0.7, "loss": 0.7},
                                        {"epoch": 2.0, "accuracy": 0.8, "loss": 0.6}]
    assert trial.read_history(tmp_path / "missing.csv") == []


# Op determinism is process-wide and permanent: these trials run in a subprocess.
CONTINUED_AND_STRAIGHT = """
import sys
from pathlib import Path
import tensorflow as tf
sys.path[:0] = ["tests", "."]
from hparam_sweep import pipeline, trial
from test_trial import VALUES, settings
tf.config.experimental.enable_op_determinism()
dataset, out = map(Path, sys.argv[1:])
data = pipeline.load_data(dataset, 24)
trial.run(VALUES, settings(dataset, deterministic=True), data, out / "continued", epochs=1, verbose=0)
trial.run(VALUES, settings(dataset, deterministic=True), data, out / "continued", epochs=3, verbose=0)
trial.run(VALUES, settings(dataset, deterministic=True), data, out / "straight", epochs=3, verbose=0)
"""


def test_a_continued_trial_ends_bit_identical_to_one_run_straight(dataset, tmp_path):
    """The halving search trains a trial to 1 epoch, then continues it to 3: as if run to 3 at once."""
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", CONTINUED_AND_STRAIGHT, str(dataset), str(tmp_path)], cwd=root, check=True)

    continued = trial_outcome(tmp_path / "continued")
    assert continued == trial_outcome(tmp_path / "straight")  # exact, not approximate
    assert all([step for step, _ in points] == [0, 1, 2] for points in continued[2].values())
    assert trial.load(tmp_path / "continued")["resumed_from_epoch"] == 1
