"""search.py: which trials run to how many epochs, and the ranking; plain Python, no TensorFlow."""

import subprocess
import sys

import search

SETTINGS = {"epochs": 3}


def record(name, status, accuracy=None, val_loss=None, epochs=3):
    metrics = {} if accuracy is None else {"accuracy": accuracy, "val_loss": val_loss}
    return {"name": name, "status": status, "metrics": metrics, "epochs": epochs, "settings": SETTINGS}


def test_grid_runs_every_unfinished_trial_once_in_grid_order():
    trials = {"a": {"x": 1}, "b": {"x": 2}, "c": {"x": 3}, "d": {"x": 4}}
    records = {"a": record("a", "success", 0.9, 0.1), "b": record("b", "failure"),
               "c": record("c", "success", 0.8, 0.2, epochs=1), "d": {**record("d", "interrupted")}}
    rounds = search.grid(trials, 3, records)
    # a finished, b failed (not retried); c stopped at epoch 1 and d was interrupted: both continue.
    assert next(rounds) == [search.Task("c", {"x": 3}, 3), search.Task("d", {"x": 4}, 3)]
    assert next(rounds, None) is None
    assert list(search.grid(trials, 3, {n: record(n, "success", 0.5, 0.5) for n in trials})) == []


def test_is_done_reads_records_without_an_epoch_count_as_fully_trained():
    old = record("a", "success", 0.9, 0.1)
    del old["epochs"]  # written before trials could stop early
    assert search.is_done(old, 3) and not search.is_done(old, 4)
    assert not search.is_done(None, 1) and not search.is_done(record("a", "running"), 1)


def test_ranked_by_accuracy_then_lower_val_loss_failures_last():
    records = [record("fail", "failure"), record("low", "success", 0.5, 0.3), record("tie-worse", "success", 0.9, 0.4),
               record("best", "success", 0.9, 0.2)]
    assert [r["name"] for r in search.ranked(records)] == ["best", "tie-worse", "low", "fail"]


def test_search_does_not_import_tensorflow():
    code = "import sys, search; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=search.__file__.rsplit("/", 1)[0])
