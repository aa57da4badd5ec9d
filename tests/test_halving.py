"""train.py --search halving end to end: rungs, continued trials, one session per trial, the ranking."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from conftest import metric, snapshot, trial_outcome
from test_train import FAST, read_results

from hparam_sweep import experiment, hooks, metrics as M, trial
import train

ROOT = Path(__file__).resolve().parent.parent

GRID = ["--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam,sgd,rmsprop", "--grid", "learning_rate=0.01"]


def test_halving_continues_the_best_third_and_the_dashboard_tells_how_far_each_went(dataset, tmp_path, tensorboard,
                                                                                    capsys):
    logdir = tmp_path / "logs"
    argv = ["--data", str(dataset), "--logdir", str(logdir), *FAST, "--epochs", "3", *GRID, "--search", "halving",
            "--min-epochs", "1"]
    assert train.main(argv) == 0
    out = capsys.readouterr().out
    assert "Rung 1 epoch(s) done: 1 of 3 go on (ETA of the rest" in out
    assert out.rstrip().endswith(train.HALVING_TRUST)  # how far its pick held up on other photos

    (rung1, rung3) = json.loads((logdir / experiment.DECISIONS_FILE).read_text())
    assert (rung1["epochs"], len(rung1["trained"]), len(rung1["promoted"]), len(rung1["stopped"])) == (1, 3, 1, 2)
    assert rung3 == {"epochs": 3, "trained": rung1["promoted"], "promoted": [], "stopped": rung1["promoted"]}
    (winner,) = rung1["promoted"]
    history = (logdir / winner / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["0", "1", "2"]  # continued, not retrained
    for name in rung1["stopped"]:
        assert not (logdir / name / "backup").exists()  # never continued: no training state kept

    rows = read_results(logdir)
    assert rows[0]["run"] == winner and [int(r[M.EPOCHS]) for r in rows] == [3, 1, 1]
    groups = {g["name"]: g for g in tensorboard(logdir).wait_for(3)}
    assert {n: g["sessions"][0]["status"] for n, g in groups.items()} == dict.fromkeys(groups, "STATUS_SUCCESS")
    assert {n: metric(g["metricValues"], M.EPOCHS) for n, g in groups.items()} == {
        n: 3 if n == winner else 1 for n in groups}
    assert all(len(g["sessions"]) == 1 for g in groups.values())
    assert (logdir / experiment.BEST_MODEL_FILE).is_file()

    # A rerun of the same command decides the same, from the trials' records on disk (halving.json
    # is written again from them), says nothing new, and trains nothing.
    before, decided = snapshot(logdir / winner), (logdir / experiment.DECISIONS_FILE).read_text()
    assert train.main(argv) == 0
    out = capsys.readouterr().out
    assert "Reusing 3 finished trial(s)" in out and "Rung" not in out
    assert (logdir / experiment.DECISIONS_FILE).read_text() == decided
    assert snapshot(logdir / winner) == before
    assert read_results(logdir) == rows


def run_cli(dataset, logdir, *extra, kill_at=None):
    """train.py --deterministic in a subprocess (op determinism is process-wide and permanent); with
    kill_at (hooks.point's NAME:N) it SIGKILLs itself there."""
    argv = ["--data", str(dataset), "--logdir", str(logdir), *FAST, "--epochs", "3", "--deterministic", "--backup-minutes",
            "0", "--grid", "num_units=8", "--grid", "dropout=0.2", "--grid", "optimizer=adam,sgd", "--grid",
            "learning_rate=0.01", "--min-epochs", "1", "--halving-rate", "2", *extra]
    env = {**os.environ, hooks.KILL_AT_ENV: kill_at or ""}
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *argv], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == (-signal.SIGKILL if kill_at else 0), done.stdout + done.stderr


def test_halving_trains_its_winner_bit_identical_to_the_grid_and_survives_kills(dataset, tmp_path):
    run_cli(dataset, tmp_path / "grid", "--search", "grid")
    run_cli(dataset, tmp_path / "halving", "--search", "halving")
    decisions = json.loads((tmp_path / "halving" / experiment.DECISIONS_FILE).read_text())
    assert [d["epochs"] for d in decisions] == [1, 2, 3]
    (winner,) = decisions[0]["promoted"]
    # Trained to 1 epoch, stopped while the other trial ran, then continued to 3: as in the grid.
    assert trial_outcome(tmp_path / "halving" / winner) == trial_outcome(tmp_path / "grid" / winner)

    # Killed in the first rung (mid-epoch of the second trial), then at the end of the second rung,
    # and rerun each time: the same decisions and the same results, nothing trained twice.
    killed = tmp_path / "killed"
    for kill_at in ("backup:3", "backup:3", None):
        run_cli(dataset, killed, "--search", "halving", kill_at=kill_at)
    assert json.loads((killed / experiment.DECISIONS_FILE).read_text()) == decisions
    for name in decisions[0]["trained"]:
        assert trial_outcome(killed / name) == trial_outcome(tmp_path / "halving" / name)
    assert json.loads((killed / winner / trial.TRIAL_FILE).read_text())["attempts"] >= 3  # rung 1, killed, resumed


def test_a_kill_before_a_rungs_decision_is_recorded_on_the_rerun(dataset, tmp_path):
    """Killed after rung 1's last trial, before its decision was written: the rerun records the
    rung, deletes the stopped trial's backup, and ends with every rung in halving.json."""
    logdir = tmp_path / "logs"
    run_cli(dataset, logdir, "--search", "halving", kill_at="round:1")
    assert not (logdir / experiment.DECISIONS_FILE).exists()
    assert len(list(logdir.glob(f"*/{trial.BACKUP_DIR}"))) == 2  # both trials of rung 1 could still go on

    run_cli(dataset, logdir, "--search", "halving")
    decisions = json.loads((logdir / experiment.DECISIONS_FILE).read_text())
    assert [d["epochs"] for d in decisions] == [1, 2, 3]
    (stopped,) = decisions[0]["stopped"]
    assert not (logdir / stopped / trial.BACKUP_DIR).exists()


def test_halving_over_random_trials_decides_among_the_sampled_ones(dataset, tmp_path, capsys):
    """--sampler random with --search halving: the two choices are independent."""
    logdir = tmp_path / "logs"
    argv = ["--data", str(dataset), "--logdir", str(logdir), *FAST, "--grid", "num_units=8", "--sampler", "random",
            "--trials", "3", "--search", "halving", "--min-epochs", "1", "--halving-rate", "3"]
    assert train.main(argv) == 0
    assert "Rung 1 epoch(s) done: 1 of 3 go on" in capsys.readouterr().out
    rung1, rung2 = json.loads((logdir / experiment.DECISIONS_FILE).read_text())
    sampled = sorted(p.parent.name for p in logdir.glob(f"*/{trial.TRIAL_FILE}"))
    assert sorted(rung1["trained"]) == sampled and [n[:4] for n in sampled] == ["000-", "001-", "002-"]
    assert rung2["trained"] == rung1["promoted"] and len(rung1["promoted"]) == 1
    rows = read_results(logdir)
    assert rows[0]["run"] == rung1["promoted"][0] and [int(r[M.EPOCHS]) for r in rows] == [2, 1, 1]
    assert json.loads((logdir / experiment.EXPERIMENT_FILE).read_text())["search"] == {
        "search": "halving", "min_epochs": 1, "halving_rate": 3, "rungs": [1, 2], "sampler": "random"}
