"""search.py: which trials run to how many epochs, and the ranking; plain Python, no TensorFlow."""

import subprocess
import sys
from pathlib import Path

import pytest

from hparam_sweep import metrics, search

SETTINGS = {"epochs": 5}


def record(name, status, accuracy=None, val_loss=None, epochs=5, curve=None):
    metrics = {} if accuracy is None else {"accuracy": accuracy, "val_loss": val_loss}
    return {"name": name, "status": status, "metrics": metrics, "epochs": epochs, "settings": SETTINGS,
            "curve": curve or []}


def proposed(trials):
    """{name: values} as the Trials a sampler proposes, in that order."""
    return [search.Trial(name, values, {"sampler": "test", "index": i}) for i, (name, values) in enumerate(trials.items())]


def test_grid_runs_every_unfinished_trial_once_in_grid_order():
    trials = proposed({"a": {"x": 1}, "b": {"x": 2}, "c": {"x": 3}, "d": {"x": 4}})
    records = {"a": record("a", "success", 0.9, 0.1), "b": record("b", "failure"),
               "c": record("c", "success", 0.8, 0.2, epochs=1), "d": {**record("d", "interrupted")}}
    rounds = search.Grid(trials, 5).rounds(records)
    # a finished, b failed (not retried); c stopped at epoch 1 and d was interrupted: both continue,
    # each task with the trial's origin for its trial.json.
    assert next(rounds) == [search.Task("c", {"x": 3}, 5, {"sampler": "test", "index": 2}),
                            search.Task("d", {"x": 4}, 5, {"sampler": "test", "index": 3})]
    assert next(rounds, None) is None
    assert list(search.Grid(trials, 5).rounds({t.name: record(t.name, "success", 0.5, 0.5) for t in trials})) == []


def test_is_done_reads_records_without_an_epoch_count_as_fully_trained():
    old = record("a", "success", 0.9, 0.1)
    del old["epochs"]  # written before trials could stop early
    assert search.is_done(old, 5) and not search.is_done(old, 6)
    assert not search.is_done(None, 1) and not search.is_done(record("a", "running"), 1)


def test_ranked_fully_trained_first_then_accuracy_then_lower_val_loss_failures_last():
    records = [record("fail", "failure"), record("low", "success", 0.5, 0.3), record("tie-worse", "success", 0.9, 0.4),
               record("best", "success", 0.9, 0.2), record("stopped-early", "success", 0.99, 0.1, epochs=1)]
    assert [r["name"] for r in search.ranked(records)] == ["best", "tie-worse", "low", "stopped-early", "fail"]


@pytest.mark.parametrize("epochs, min_epochs, rate, rungs", [(5, 1, 3, [1, 3, 5]), (9, 1, 3, [1, 3, 9]), (10, 1, 3, [1, 3, 9, 10]),
                                                             (5, 2, 2, [2, 4, 5]), (1, 1, 3, [1]), (4, 5, 3, [4])])
def test_rungs_are_min_epochs_times_powers_of_the_rate_ending_at_epochs(epochs, min_epochs, rate, rungs):
    assert search.Halving([], epochs, min_epochs, rate).rungs == rungs


def simulate(halving, accuracy, loss=lambda name, epoch: 1.0, stops=None):
    """Run a halving search with fake training: accuracy(name, epoch) -> validation accuracy (None: fails),
    loss(name, epoch) -> validation loss; stops: {name: the epoch early stopping ends that trial at}."""
    records, trained = {}, []
    for tasks in halving.rounds(records):
        for task in tasks:
            trained.append((task.name, task.epochs))
            stop = (stops or {}).get(task.name, halving.epochs)
            epochs = min(task.epochs, stop)
            curve = [{"accuracy": accuracy(task.name, e), "val_loss": loss(task.name, e)} for e in range(1, epochs + 1)]
            if any(row["accuracy"] is None for row in curve):
                records[task.name] = record(task.name, "failure", epochs=epochs)
            else:
                records[task.name] = record(task.name, "success", curve[-1]["accuracy"], curve[-1]["val_loss"], epochs,
                                            curve)
                if stop <= task.epochs and stop < halving.epochs:  # trial.run's rule: before the last epoch
                    records[task.name]["stopped_early_at"] = stop
    return records, trained


def test_halving_trains_the_best_third_on_and_costs_68_epochs_for_36_trials():
    halving = search.Halving(proposed({f"t{i:02}": {"i": i} for i in range(36)}), 5, 1, 3)
    records, trained = simulate(halving, lambda name, epoch: int(name[1:]) / 100 + epoch / 1000)
    assert halving.planned_epochs() == 36 + 12 * 2 + 4 * 2 == 68
    rung1, rung3, rung5 = halving.decisions(records)
    assert (rung1.epochs, len(rung1.trained), len(rung1.promoted)) == (1, 36, 12)
    assert rung1.promoted == [f"t{i}" for i in range(35, 23, -1)]  # the best accuracies, best first
    assert (rung3.epochs, len(rung3.trained), rung3.promoted) == (3, 12, ["t35", "t34", "t33", "t32"])
    assert (rung5.epochs, rung5.trained, rung5.promoted) == (5, ["t35", "t34", "t33", "t32"], [])
    assert [search.epochs_trained(r) for r in search.ranked(records.values())][:5] == [5, 5, 5, 5, 3]
    assert search.ranked(records.values())[0]["name"] == "t35"
    # Each promoted trial is continued from where it stopped: 68 epochs in all, none repeated.
    epochs_run, below = 0, {}
    for name, epochs in trained:
        epochs_run += epochs - below.get(name, 0)
        below[name] = epochs
    assert epochs_run == 68


def test_halving_ties_failures_and_a_rerun_make_the_same_decisions():
    trials = proposed({name: {} for name in ["a", "b", "c", "d", "e", "f"]})

    def accuracy(name, epoch):
        return None if name == "a" else {"b": 0.5, "c": 0.5, "d": 0.5}.get(name, 0.4)

    halving = search.Halving(trials, 3, 1, 3)
    records, _ = simulate(halving, accuracy)
    first = halving.decisions(records)[0]
    # 6 trials, rate 3: two go on; b, c, d tie on accuracy and loss, so the trial order decides: b and c.
    assert first.promoted == ["b", "c"] and "a" in first.stopped
    # A rerun over the same records (after a kill, say), by a new search, decides the same and trains nothing more.
    assert search.Halving(trials, 3, 1, 3).decisions(dict(records)) == halving.decisions(records)
    assert list(halving.rounds(records)) == []


def test_a_failed_trial_never_goes_on_even_when_all_fail():
    halving = search.Halving(proposed({"a": {}, "b": {}}), 3, 1, 3)
    records, trained = simulate(halving, lambda name, epoch: None)
    assert trained == [("a", 1), ("b", 1)]
    assert halving.decisions(records)[0].promoted == []


def test_val_loss_as_the_objective_ranks_and_promotes_the_lower_loss():
    loss = metrics.objective("val_loss")
    records = [record("fail", "failure"), record("accurate", "success", 0.9, 0.5), record("low", "success", 0.6, 0.2),
               record("low-tie-better", "success", 0.7, 0.2), record("short", "success", 0.5, 0.1, epochs=1)]
    # Lower loss first, ties to the higher accuracy; fully trained first and failures last, as by default.
    assert [r["name"] for r in search.ranked(records, loss)] == ["low-tie-better", "low", "accurate", "short", "fail"]
    assert [r["name"] for r in search.ranked(records)] == ["accurate", "low-tie-better", "low", "short", "fail"]

    # Accuracy and loss both rise with i: the loss objective continues the first trials, the default the last.
    trials = proposed({f"t{i}": {} for i in range(6)})
    by_loss, _ = simulate(search.Halving(trials, 3, 1, 3, loss), lambda n, e: int(n[1:]) / 10, lambda n, e: int(n[1:]) / 10)
    assert search.Halving(trials, 3, 1, 3, loss).decisions(by_loss)[0].promoted == ["t0", "t1"]
    by_accuracy, _ = simulate(search.Halving(trials, 3, 1, 3), lambda n, e: int(n[1:]) / 10, lambda n, e: int(n[1:]) / 10)
    assert search.Halving(trials, 3, 1, 3).decisions(by_accuracy)[0].promoted == ["t5", "t4"]


@pytest.mark.parametrize("name, values, patience, stopped_at", [
    ("val_accuracy", [0.5, 0.6, 0.6, 0.7], 1, 3),  # an equal value is no improvement
    ("val_accuracy", [0.5, 0.6, 0.6, 0.7], 2, None),  # epoch 4 improved in time
    ("val_accuracy", [0.5, 0.6, 0.6, 0.55, 0.7], 2, 4),
    ("val_accuracy", [0.5], 1, None),
    ("val_loss", [0.7, 0.5, 0.6], 1, 3),  # lower is better
    ("val_loss", [0.7, 0.5, 0.4, 0.45, 0.3], 2, None),
    ("val_auc", [0.8, 0.7, 0.9, 0.85, 0.85], 2, 5),
])
def test_early_stopping_ends_a_trial_once_its_objective_has_not_improved_for_patience_epochs(name, values, patience,
                                                                                             stopped_at):
    assert metrics.objective(name).stopped_at(values, patience) == stopped_at


@pytest.mark.parametrize("stop", [2, 3])  # inside rung 3, or at its very epoch
def test_a_trial_stopped_early_is_done_ranks_as_fully_trained_and_never_goes_on(stop):
    halving = search.Halving(proposed({f"t{i}": {} for i in range(6)}), 5, 1, 3)
    # t5 is the best at every epoch, but early stopping ends it at epoch `stop`, while rung 3 trains it.
    records, trained = simulate(halving, lambda name, epoch: int(name[1:]) / 100 + epoch / 1000, stops={"t5": stop})
    assert records["t5"]["stopped_early_at"] == stop
    rung1, rung3, rung5 = halving.decisions(records)
    assert rung1.promoted == ["t5", "t4"]
    assert (rung3.trained, rung3.promoted) == (["t5", "t4"], ["t4"])  # t4 goes on in its place: t5 is done
    assert rung5.trained == ["t4"]
    assert [t for t in trained if t[0] == "t5"] == [("t5", 1), ("t5", 3)]  # never asked for more
    assert search.is_done(records["t5"], 5) and list(halving.rounds(records)) == []
    # It ranks among the fully trained trials (its epochs are all it trains) by its accuracy there: first.
    assert [r["name"] for r in search.ranked(records.values())][:2] == ["t5", "t4"]


def test_search_does_not_import_tensorflow():
    code = "import sys; from hparam_sweep import search; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(search.__file__).parents[1])
