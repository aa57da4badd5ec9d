"""--early-stopping and --objective end to end: a stopped trial is a finished success, resumes exactly,
and halving never continues it.

A trial with learning rate 0 never changes its weights, so its validation metrics never improve:
with patience 1 it stops after epoch 2 on any machine, while dropout and the data order still make
every training epoch's metrics differ (an exact resume must reproduce them).
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import metric, snapshot, trial_outcome
from test_train import CPU, read_results

from hparam_sweep import experiment, hooks, metrics as M, runlog, trial
import train

ROOT = Path(__file__).resolve().parent.parent
STILL = ["--grid", "num_units=8", "--grid", "dropout=0.2", "--grid", "optimizer=adam", "--grid", "learning_rate=0"]
STILL_TRIAL = trial.trial_name({"num_units": 8, "dropout": 0.2, "optimizer": "adam", "learning_rate": 0.0})
FAST = ["--image-size", "24", "--batch-size", "8", "--steps-per-epoch", "3", "--quiet", "--no-cache", *CPU]


def test_an_early_stopped_trial_is_a_success_that_says_where_it_stopped(dataset, tmp_path, tensorboard, capsys):
    logdir = tmp_path / "logs"
    argv = ["--data", str(dataset), "--logdir", str(logdir), *FAST, "--epochs", "4", *STILL, "--early-stopping", "1",
            "--objective", "val_auc"]
    assert train.main(argv) == 0
    out = capsys.readouterr().out
    assert "-> val_auc " in out and "stopped early at epoch 2" in out and "(ranked by val_auc)" in out

    record = json.loads((logdir / STILL_TRIAL / trial.TRIAL_FILE).read_text())
    assert (record["status"], record["epochs"], record["stopped_early_at"]) == ("success", 2, 2)
    assert record["metrics"][M.STOPPED_EARLY_AT] == 2 and record["metrics"][M.EPOCHS] == 2
    assert record["settings"]["early_stopping"] == 1 and record["settings"]["objective"] == "val_auc"
    assert [int(r["epoch"]) for r in runlog.read_history(logdir / STILL_TRIAL / runlog.HISTORY_FILE)] == [0, 1]
    # AUC is compiled into the model for the objective: a column of history.csv, a summary metric and its curves.
    assert record["metrics"][M.AUC] == record["curve"][-1][M.AUC]
    assert {("train", M.EPOCH_AUC), ("validation", M.EPOCH_AUC)} <= set(runlog.read_curves(logdir / STILL_TRIAL))
    # Finished: its model kept (the last epoch's), its backup gone, and it is rank 1's model.
    assert (logdir / STILL_TRIAL / trial.MODEL_FILE).is_file() and not (logdir / STILL_TRIAL / trial.BACKUP_DIR).exists()
    assert (logdir / experiment.BEST_MODEL_FILE).is_file()
    [row] = read_results(logdir)
    assert (row["status"], row[M.EPOCHS], row[M.STOPPED_EARLY_AT]) == ("success", "2", "2")
    assert float(row[M.AUC]) == record["metrics"][M.AUC]

    api = tensorboard(logdir)
    [group] = api.wait_for(1)
    assert group["sessions"][0]["status"] == "STATUS_SUCCESS"
    assert metric(group["metricValues"], M.STOPPED_EARLY_AT) == 2 and metric(group["metricValues"], M.EPOCHS) == 2
    shown = {(m["name"].get("group", ""), m["name"]["tag"]) for m in api.experiment()["metricInfos"]}
    assert {("", M.STOPPED_EARLY_AT), ("", M.AUC), ("validation", M.EPOCH_AUC)} <= shown

    # A rerun reuses it as finished: nothing trained again.
    before = snapshot(logdir / STILL_TRIAL)
    assert train.main(argv) == 0
    assert "Reusing 1 finished trial(s)" in capsys.readouterr().out
    assert snapshot(logdir / STILL_TRIAL) == before


def run_still_trial(dataset, logdir, kill_at=None):
    """train.py --deterministic on STILL_TRIAL for up to 4 epochs of 3 steps, early stopping with patience 1, backed
    up after every step, in a subprocess (op determinism is process-wide); with kill_at (hooks.point's NAME:N) it
    SIGKILLs itself there."""
    command = [sys.executable, str(ROOT / "train.py"), "--data", str(dataset), "--logdir", str(logdir), *FAST,
               "--epochs", "4", *STILL, "--early-stopping", "1", "--deterministic", "--backup-minutes", "0"]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, hooks.KILL_AT_ENV: kill_at or ""}, capture_output=True,
                          text=True)
    assert done.returncode == (-signal.SIGKILL if kill_at else 0), done.stdout + done.stderr


def test_an_early_stopped_trial_killed_and_resumed_stops_at_the_same_epoch_bit_identical(dataset, tmp_path):
    run_still_trial(dataset, tmp_path / "straight")
    expected = trial_outcome(tmp_path / "straight" / STILL_TRIAL)
    assert expected[0][M.STOPPED_EARLY_AT] == 2

    # Killed mid-epoch 2 (its 5th backup: epoch 1 took 3): the resumed attempt sees only epoch 1 done,
    # and must know that epoch 1 was the best. Killed right after epoch 2's backup, before its logs and
    # trial.json: the backup alone tells the resumed attempt that the trial has stopped.
    for logdir, kill_at in [(tmp_path / "mid-epoch", "backup:5"), (tmp_path / "at-the-stop", "backup:6")]:
        run_still_trial(dataset, logdir, kill_at)
        run_still_trial(dataset, logdir)
        record = json.loads((logdir / STILL_TRIAL / trial.TRIAL_FILE).read_text())
        assert (record["attempts"], record["resumed_from_step"], record["stopped_early_at"]) == (2, int(kill_at[-1]), 2)
        assert trial_outcome(logdir / STILL_TRIAL) == expected  # exact, not approximate


def test_halving_never_continues_an_early_stopped_trial(dataset, tmp_path, capsys):
    """Rungs at 1, 2 and 4 epochs: the trial that goes on from rung 1 stops early in rung 2, so nobody goes on from
    there, and it ranks first as a finished trial."""
    logdir = tmp_path / "logs"
    argv = ["--data", str(dataset), "--logdir", str(logdir), *FAST, "--epochs", "4", *STILL, "--grid", "num_units=8,16",
            "--early-stopping", "1", "--search", "halving", "--min-epochs", "1", "--halving-rate", "2"]
    assert train.main(argv) == 0
    first, second = (trial.trial_name({"num_units": u, "dropout": 0.2, "optimizer": "adam", "learning_rate": 0.0})
                     for u in (8, 16))
    rung1, rung2 = json.loads((logdir / experiment.DECISIONS_FILE).read_text())
    assert (rung1["trained"], rung1["promoted"]) == ([first, second], [first])  # a tie: trial order decides
    assert (rung2["epochs"], rung2["trained"], rung2["promoted"]) == (2, [first], [])
    record = json.loads((logdir / first / trial.TRIAL_FILE).read_text())
    assert (record["epochs"], record["stopped_early_at"], record["attempts"]) == (2, 2, 2)  # rung 1, rung 2: no more
    assert [row["run"] for row in read_results(logdir)] == [first, second]
    assert (logdir / experiment.BEST_MODEL_FILE).read_bytes() == (logdir / first / trial.MODEL_FILE).read_bytes()
    capsys.readouterr()

    assert train.main(argv) == 0  # the rerun decides the same and trains nothing
    assert "Reusing 2 finished trial(s)" in capsys.readouterr().out
    assert json.loads((logdir / first / trial.TRIAL_FILE).read_text()) == record
