"""Which trials run, in what order and to how many epochs; and how finished trials rank.

Plain Python over trial records (the dicts trial.run returns and trial.json holds), so it is
testable without TensorFlow and does not care where trials run. A search (the `Search` interface)
proposes its trials and decides from their records alone: its `rounds` is a generator, each round
a list of Tasks that may run in any order or all at once; the loop (loop.py) has an executor run
them, puts their records into the dict it shares with the search, and asks for the next.
Decisions are pure functions of the records, so a rerun after a kill makes the same ones.

Which configurations the trials are is the sampler's choice (sampler.py); how far each trains, the
search's. Three searches:
- Grid: every trial to `epochs`, over a sampler's trials proposed at once (grid, random).
- Halving (successive halving, Jamieson & Talwalkar 2016): every trial to the first rung, then
  only the best 1/rate of them to the next rung, and so on; the last rung is `epochs`.
- Sequential: every trial to `epochs`, a batch at a time, as a sampler that learns from the results
  (TPE) proposes them from the records of the batches before.
"""

import math
from dataclasses import dataclass, field

from hparam_sweep import metrics
from hparam_sweep.common import FINISHED


@dataclass(frozen=True)
class Trial:
    """A proposed trial: its run folder name, its hparam values, and where it came from (`origin`,
    e.g. {"sampler": "random", "index": 7}, which its trial.json records)."""

    name: str
    values: dict
    origin: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Task:
    """Train trial `name` (hparams `values`, from `origin`) up to `epochs` epochs."""

    name: str
    values: dict
    epochs: int
    origin: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What happened at one halving rung: who trained to `epochs`, who goes on to the next rung."""

    epochs: int
    trained: list
    promoted: list

    @property
    def stopped(self):
        return [name for name in self.trained if name not in self.promoted]


def epochs_trained(record):
    """How many epochs a record says its trial trained (records older than the field: all of them)."""
    return record.get("epochs", record["settings"]["epochs"])


def stopped_early(record, epoch=math.inf):
    """Whether early stopping ended the trial (a success that trains no further: it is done), at `epoch` or before."""
    return record.get("stopped_early_at") is not None and record["stopped_early_at"] <= epoch


def fully_trained(record, epochs):
    """Whether a successful trial's record shows it trained `epochs` epochs, or as far as early stopping let it."""
    return record["status"] == "success" and (epochs_trained(record) >= epochs or stopped_early(record))


def is_done(record, epochs):
    """Whether a trial's record shows it finished at `epochs` epochs or more (or failed, or stopped early)."""
    if record is None or record.get("status") not in FINISHED:
        return False
    return record["status"] == "failure" or fully_trained(record, epochs)


def metrics_at(record, epoch):
    """The validation metrics ({key: value}) after `epoch` epochs, or None if the trial failed or stopped before."""
    if record["status"] != "success" or epochs_trained(record) < epoch:
        return None
    return record["metrics"] if epoch == epochs_trained(record) else record["curve"][epoch - 1]


class Search:
    """What the loop asks of a search; Grid and Halving are the two, and a new one subclasses this.

    `trials` holds the Trials it proposes ({name: Trial}, in trial order); `records` ({name:
    record}) is filled in by the loop as tasks finish, and is all that a search decides from.
    """

    def __init__(self, trials, epochs):
        self.trials, self.epochs = {t.name: t for t in trials}, epochs

    def describe(self):
        """What experiment.json records of it: a rerun with another description is refused."""
        raise NotImplementedError

    def rounds(self, records, adopt=None):
        """The rounds of Tasks still to run, one list at a time (the loop runs one before asking for
        the next). A search that proposes trials as it goes calls adopt(trials) on each it proposes:
        the loop puts an earlier run's records of them into `records` (those of `trials` it took in
        before the first round)."""
        raise NotImplementedError

    def decisions(self, records):
        """The Decisions made so far (halving.json), in order."""
        return []

    def planned_epochs(self):
        """Epochs the search trains when no trial fails (for the ETA)."""
        raise NotImplementedError

    def task(self, name, epochs):
        """A Task that trains trial `name` up to `epochs`."""
        trial = self.trials[name]
        return Task(name, trial.values, epochs, trial.origin)


class Grid(Search):
    """Every trial to `epochs`, in trial order, as one round."""

    def describe(self):
        return {"search": "grid"}

    def rounds(self, records, adopt=None):
        tasks = [self.task(n, self.epochs) for n in self.trials if not is_done(records.get(n), self.epochs)]
        if tasks:
            yield tasks

    def planned_epochs(self):
        return len(self.trials) * self.epochs


class Sequential(Search):
    """Every trial to `epochs`, a batch of them a round, as `sampler.batches(records)` proposes them:
    each batch from the records of the ones before, which a killed run's rerun has again."""

    def __init__(self, sampler, epochs):
        super().__init__([], epochs)
        self.sampler = sampler

    def describe(self):
        return {"search": "grid"}  # how far each trains: as the grid

    def rounds(self, records, adopt=None):
        for batch in self.sampler.batches(records):
            self.trials.update((t.name, t) for t in batch)
            if adopt:
                adopt(batch)
            tasks = [self.task(t.name, self.epochs) for t in batch if not is_done(records.get(t.name), self.epochs)]
            if tasks:
                yield tasks

    def planned_epochs(self):
        return self.sampler.count * self.epochs


class Halving(Search):
    """Successive halving: rungs at min_epochs * rate**k epochs, capped, ending at `epochs`.

    At each rung the best ceil(n / rate) trials (at least one) by the objective at that epoch
    (metrics.Objective.order: by default validation accuracy, ties to the lower validation loss) go
    on; then ties go to the trial earlier in trial order, so the same records always give the same
    decisions. A failed trial never goes on, nor one that early stopping ended: it is done.
    """

    def __init__(self, trials, epochs, min_epochs, rate, objective=metrics.DEFAULT_OBJECTIVE):
        if min_epochs < 1 or rate < 2:
            raise ValueError("halving needs min_epochs >= 1 and a rate of at least 2")
        super().__init__(trials, epochs)
        self.min_epochs, self.rate, self.objective = min_epochs, rate, objective
        self.rungs = []
        rung = min(min_epochs, epochs)
        while rung < epochs:
            self.rungs.append(rung)
            rung *= rate
        self.rungs.append(epochs)

    def describe(self):
        return {"search": "halving", "min_epochs": self.min_epochs, "halving_rate": self.rate, "rungs": self.rungs}

    def rounds(self, records, adopt=None):
        entered = list(self.trials)
        for rung in self.rungs:
            tasks = [self.task(n, rung) for n in entered if not is_done(records.get(n), rung)]
            if tasks:
                yield tasks
            entered = self.promote(entered, records, rung)

    def promote(self, entered, records, rung):
        """The trials that go on from `rung`, best first."""
        order = list(self.trials)

        def key(name):
            return self.objective.order(metrics_at(records[name], rung)), order.index(name)

        # Not a trial that early stopping ended by this rung; one it ended later went on from here.
        alive = [n for n in entered if metrics_at(records[n], rung) is not None and not stopped_early(records[n], rung)]
        return sorted(alive, key=key)[: max(1, math.ceil(len(entered) / self.rate))] if rung < self.epochs else []

    def decisions(self, records):
        """The rungs decided so far (every trial of the rung has its record), in order."""
        decided, entered = [], list(self.trials)
        for rung in self.rungs:
            if not entered or not all(is_done(records.get(n), rung) for n in entered):
                break
            promoted = self.promote(entered, records, rung)
            decided.append(Decision(rung, entered, promoted))
            entered = promoted
        return decided

    def planned_epochs(self):
        total, below, n = 0, 0, len(self.trials)
        for rung in self.rungs:
            total += n * (rung - below)
            below, n = rung, max(1, math.ceil(n / self.rate))
        return total


def ranked(records, objective=metrics.DEFAULT_OBJECTIVE):
    """Finished trials, best first: successes by epochs trained (the fully trained first; a trial
    that early stopping ended counts as fully trained), then by the objective at their last epoch
    (metrics.Objective.order: by default higher accuracy, then lower validation loss); failures last."""

    def key(r):
        trained = 0 if r["status"] != "success" else r["settings"]["epochs"] if stopped_early(r) else epochs_trained(r)
        return (r["status"] != "success", -trained, objective.order(r.get("metrics") or {}))

    return sorted(records, key=key)
