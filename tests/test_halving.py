"""train.py --search halving end to end: rungs, continued trials, one session per trial, the ranking."""

import json

import experiment
import hparams as H
import search
import train
from conftest import metric, snapshot
from test_train import FAST, read_results

GRID = ["--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam,sgd,rmsprop", "--grid", "learning_rate=0.01"]


def test_halving_continues_the_best_third_and_the_dashboard_tells_how_far_each_went(dataset, tmp_path, tensorboard,
                                                                                    capsys):
    logdir = tmp_path / "logs"
    argv = ["--data", str(dataset), "--logdir", str(logdir), *FAST, "--epochs", "3", *GRID, "--search", "halving"]
    assert train.main(argv) == 0
    out = capsys.readouterr().out
    assert "Rung 1 epoch(s) done: 1 of 3 go on." in out

    (rung1, rung3) = json.loads((logdir / experiment.DECISIONS_FILE).read_text())
    assert (rung1["epochs"], len(rung1["trained"]), len(rung1["promoted"]), len(rung1["stopped"])) == (1, 3, 1, 2)
    assert rung3 == {"epochs": 3, "trained": rung1["promoted"], "promoted": [], "stopped": rung1["promoted"]}
    (winner,) = rung1["promoted"]
    history = (logdir / winner / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["0", "1", "2"]  # continued, not retrained
    for name in rung1["stopped"]:
        assert not (logdir / name / "backup").exists()  # never continued: no training state kept

    rows = read_results(logdir)
    assert rows[0]["run"] == winner and [int(r[H.METRIC_EPOCHS]) for r in rows] == [3, 1, 1]
    groups = {g["name"]: g for g in tensorboard(logdir).wait_for(3)}
    assert {n: g["sessions"][0]["status"] for n, g in groups.items()} == dict.fromkeys(groups, "STATUS_SUCCESS")
    assert {n: metric(g["metricValues"], H.METRIC_EPOCHS) for n, g in groups.items()} == {
        n: 3 if n == winner else 1 for n in groups}
    assert all(len(g["sessions"]) == 1 for g in groups.values())
    assert (logdir / experiment.BEST_MODEL_FILE).is_file()

    # A rerun of the same command decides the same and trains nothing.
    before = snapshot(logdir / winner)
    assert train.main(argv) == 0
    assert "Reusing 3 finished trial(s)" in capsys.readouterr().out
    assert snapshot(logdir / winner) == before
    assert search.ranked([json.loads((logdir / r["run"] / "trial.json").read_text()) for r in rows])[0]["name"] == winner
