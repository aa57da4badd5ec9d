"""Which trials run, in what order and to how many epochs; and how finished trials rank.

Plain Python over trial records (the dicts trial.run returns and trial.json holds), so it is
testable without TensorFlow and does not care where trials run. A search is a generator of
rounds: each round is a list of Tasks that may run in any order or at the same time; the
runner runs them, updates the records it shares with the search, and asks for the next round.
"""

from dataclasses import dataclass

import hparams as H


@dataclass(frozen=True)
class Task:
    """Train trial `name` (hparams `values`) up to `epochs` epochs."""

    name: str
    values: dict
    epochs: int


def is_done(record, epochs):
    """Whether a trial's record shows it finished at `epochs` epochs or more (or failed)."""
    if record is None or record.get("status") not in ("success", "failure"):
        return False
    return record["status"] == "failure" or record.get("epochs", record["settings"]["epochs"]) >= epochs


def grid(trials, epochs, records):
    """The grid search: one round, every trial not yet done, in grid order.

    trials: {name: hparam values}, in grid order; records: {name: record}, updated by the runner.
    """
    tasks = [Task(name, values, epochs) for name, values in trials.items() if not is_done(records.get(name), epochs)]
    if tasks:
        yield tasks


def ranked(records):
    """Finished trials, best first: successes by accuracy (then lower val loss), failures last."""

    def key(r):
        m = r.get("metrics") or {}
        return (r["status"] != "success", -m.get(H.METRIC_ACCURACY, 0.0), m.get(H.METRIC_VAL_LOSS, 0.0))

    return sorted(records, key=key)
