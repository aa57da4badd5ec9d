"""train.py --sampler tpe: the logdir is the study's only storage, so a killed search resumes exactly."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import trial_outcome
from test_train import FAST, read_results

from hparam_sweep import hooks, sampler

pytest.importorskip("optuna")

ROOT = Path(__file__).resolve().parent.parent
# 6 trials in batches of 2: the first TPE_STARTUP_TRIALS are TPE's random start, the rest modelled on them.
TPE = [*FAST, "--grid", "num_units=8,16", "--sampler", "tpe", "--trials", "6", "--tpe-batch", "2", "--deterministic"]


def run_tpe(dataset, logdir, kill_at=None):
    """train.py with TPE, in a subprocess (op determinism is process-wide); with kill_at (hooks.point's
    NAME:N) it SIGKILLs itself there."""
    env = {**os.environ, hooks.KILL_AT_ENV: kill_at or ""}
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), "--data", str(dataset), "--logdir", str(logdir), *TPE],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == (-signal.SIGKILL if kill_at else 0), done.stdout + done.stderr


def outcome(logdir):
    """{trial name: (hparams, index, metrics/history/curves)} of every trial in results.csv."""
    found = {}
    for row in read_results(logdir):
        record = json.loads((logdir / row["run"] / "trial.json").read_text())
        found[row["run"]] = (record["hparams"], record["index"], trial_outcome(logdir / row["run"]))
    return found


def test_a_tpe_search_killed_mid_trial_resumes_into_the_uninterrupted_search(dataset, tmp_path):
    run_tpe(dataset, tmp_path / "straight")
    expected = outcome(tmp_path / "straight")
    assert sorted(index for _, index, _ in expected.values()) == list(range(6))
    assert sampler.TPE_STARTUP_TRIALS < 6  # some trials were proposed from the results of others
    assert {(r["sampler"], r["status"]) for r in read_results_records(tmp_path / "straight")} == {("tpe", "success")}

    # Each trial logs when it starts and after each of its 2 epochs: the 11th write is trial 3's
    # first epoch, mid-trial; the kill leaves it a backup to resume from, and the modelled trials 4
    # and 5 are then proposed from its resumed record.
    logdir = tmp_path / "killed"
    run_tpe(dataset, logdir, kill_at="history:11")
    killed = {p.parent.name: json.loads(p.read_text()) for p in logdir.glob("*/trial.json")}
    assert sorted(r["status"] for r in killed.values()) == ["running"] + ["success"] * 3
    run_tpe(dataset, logdir)
    assert outcome(logdir) == expected  # the same names and hparams, bit-identical metrics and curves
    resumed = [r for r in read_results_records(logdir) if r["index"] == 3]
    assert resumed[0]["attempts"] == 2


def read_results_records(logdir):
    return [json.loads((logdir / row["run"] / "trial.json").read_text()) for row in read_results(logdir)]
