"""The logdir as an experiment: which earlier trials a rerun reuses, refused settings, --restart."""

import csv
import json

from conftest import snapshot

import experiment
import train


def test_changed_grid_reuses_only_matching_trials(dataset, tmp_path, capsys):
    logdir = tmp_path / "logs"
    fast = ["--data", str(dataset), "--logdir", str(logdir), "--image-size", "24", "--batch-size", "8",
            "--epochs", "1", "--steps-per-epoch", "2", "--quiet", "--grid", "num_units=8", "--grid", "dropout=0.1",
            "--grid", "learning_rate=0.01"]
    assert train.main([*fast, "--grid", "optimizer=adam,sgd"]) == 0
    adam = experiment.trial_name({"num_units": 8, "dropout": 0.1, "optimizer": "adam", "learning_rate": 0.01})
    before = snapshot(logdir / adam)
    capsys.readouterr()

    assert train.main([*fast, "--grid", "optimizer=adam,rmsprop"]) == 0
    out = capsys.readouterr().out
    assert "Reusing 1 finished trial(s)" in out and "1 to run" in out
    assert "1 other trial(s)" in out  # the sgd trial: kept, but not ranked with this grid
    assert snapshot(logdir / adam) == before
    with (logdir / "results.csv").open(newline="") as f:
        ranked = [row["run"] for row in csv.DictReader(f)]
    assert len(ranked) == 2 and all("sgd" not in r for r in ranked)
    domains = json.loads((logdir / experiment.EXPERIMENT_FILE).read_text())["domains"]
    assert domains["optimizer"] == ["adam", "rmsprop"]

    # Other settings make every earlier trial incomparable: refused, then --restart moves them aside.
    assert train.main([*fast, "--grid", "optimizer=adam", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "epochs 1 -> 2" in err and "--restart" in err
    assert train.main([*fast, "--grid", "optimizer=adam", "--epochs", "2", "--restart"]) == 0
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("logs-before-")]
    assert len(moved) == 1 and snapshot(moved[0] / adam) == before
