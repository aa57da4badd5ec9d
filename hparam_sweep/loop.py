"""The one search loop, whatever runs the trials.

`run_search` asks the search (search.py) for a round of tasks, hands them to an executor, takes
the records back as they finish, and after each one writes results.csv and prints the trial's
line; after each round it records the search's decisions (halving.json). The executor only runs
tasks: `InProcess` here (one trial at a time, in this process), or parallel.RayExecutor (a round's
trials side by side, on a Ray cluster). Either calls trial.run, which keeps a fully trained
trial's model in its run folder; after each trial the loop makes best_model.keras rank 1's
(experiment.keep_best, the one rule for it).

An executor has one method, run(tasks, started): it calls started(task) as each
task starts, and yields each task's record as the task ends, in the order they end.
"""

import datetime
import time

from hparam_sweep import console, experiment, hooks, metrics, search, trial
from hparam_sweep.common import BACKUP_MINUTES


class InProcess:
    """Runs a round's trials one after another in this process, on the (train, validation)
    ImageSets it was given."""

    def __init__(self, settings, data, logdir, verbose, backup_minutes=BACKUP_MINUTES, histograms=True):
        self.settings, self.data, self.logdir = settings, data, logdir
        self.verbose, self.backup_minutes, self.histograms = verbose, backup_minutes, histograms

    def run(self, tasks, started):
        for task in tasks:
            started(task)
            yield trial.run(task.values, self.settings, self.data, self.logdir / task.name, task.epochs,
                            self.verbose, self.backup_minutes, task.origin, self.histograms)


def describe(values):
    """A trial's hparams for its console lines; a sampled float to 4 digits (trial.json has it exact)."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def seconds_between(record):
    """How long a trial's last attempt took, from its record's start and end times."""
    try:
        return (datetime.datetime.fromisoformat(record["finished"])
                - datetime.datetime.fromisoformat(record["started"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return 0.0


def outcome_line(label, values, record, eta, objective):
    """A finished trial's console line: its objective's value (by default, "accuracy 0.8750")."""
    if record["status"] == "success":
        outcome = f"{objective.key} {record['metrics'][objective.key]:.4f}"
        if search.stopped_early(record):
            outcome += f", stopped early at epoch {record['stopped_early_at']}"
    else:
        outcome = f"FAILED: {record['error']}"
    return (f"{label} {describe(values)} -> {outcome} ({console.minutes(seconds_between(record))}, "
            f"ETA {console.minutes(eta)})")


def print_decision(decision, last_rung, eta):
    """A halving rung as it completes: who goes on, who stopped, and the time the rest should take."""
    if decision.epochs == last_rung:
        print(f"\nRung {decision.epochs} epoch(s) done: {len(decision.trained)} trial(s) fully trained.", flush=True)
        return
    print(f"\nRung {decision.epochs} epoch(s) done: {len(decision.promoted)} of {len(decision.trained)} go on "
          f"(ETA of the rest {console.minutes(eta)}).", flush=True)
    print("  go on:   " + ", ".join(decision.promoted))
    print("  stopped: " + (", ".join(decision.stopped) or "none"), flush=True)


def reuse_records(logdir, trials, settings):
    """{name: record} of the trials ({name: search.Trial}) that a rerun reuses, said on the console."""
    records = experiment.reusable_records(logdir, trials, settings)
    if records:
        print(f"Reusing {len(records)} finished trial(s) from {logdir}; {len(trials) - len(records)} to run.")
    return records


class Eta:
    """The rest of the search at this run's pace so far: wall time per epoch trained."""

    def __init__(self, planned, trained):
        self.planned, self.start, self.trained_before = planned, time.monotonic(), trained

    def seconds(self, trained):
        done = max(1, trained - self.trained_before)
        return (time.monotonic() - self.start) / done * max(0, self.planned - trained)


def run_search(searcher, settings, hparams, logdir, executor):
    """Run the search (a search.Search) in logdir with `executor`; return the records of the trials
    it proposed."""
    records, objective = {}, metrics.objective(settings.objective)

    def trained(among):
        """Epochs the successful trials among these records trained."""
        return sum(search.epochs_trained(r) for r in among.values() if r["status"] == "success")

    def adopt(trials):
        """Take in an earlier run's records of these proposed trials: all of them before the first
        round, or a batch at a time as a Sequential search proposes it."""
        found = reuse_records(logdir, {t.name: t for t in trials}, settings)
        records.update(found)
        eta.trained_before += trained(found)
        record_results()  # before the first round too: a changed --grid may have another rank 1 among the reused

    def record_decisions(decided):
        """Say and save the rungs decided since halving.json's last one (a run killed between a
        rung's last trial and its decision records it now); return how many there are."""
        decisions = searcher.decisions(records)
        for decision in decisions[decided:]:
            print_decision(decision, settings.epochs, eta.seconds(trained(records)))
            for name in decision.stopped if decision.epochs < settings.epochs else []:
                trial.discard_backup(logdir / name)  # never continued: its training state is only disk
        experiment.write_decisions(logdir, decisions)
        return len(decisions)

    def record_results():
        ranked = search.ranked(list(records.values()), objective)
        experiment.write_results(logdir, ranked, hparams, settings)
        experiment.keep_best(logdir, ranked, settings.epochs)

    eta = Eta(searcher.planned_epochs(), 0)
    adopt(list(searcher.trials.values()))
    decided = record_decisions(experiment.recorded_decisions(logdir))
    for tasks in searcher.rounds(records, adopt):
        labels = {task.name: f"[{k}/{len(tasks)}]" for k, task in enumerate(tasks, 1)}
        values = {task.name: task.values for task in tasks}

        def started(task):
            print(f"\n{labels[task.name]} {describe(task.values)}, to epoch {task.epochs}", flush=True)

        for record in executor.run(tasks, started):
            name = record["name"]
            records[name] = record
            record_results()
            print(outcome_line(labels[name], values[name], record, eta.seconds(trained(records)), objective), flush=True)
        hooks.point("round")  # tests: a kill between a round's last trial and its decisions
        decided = record_decisions(decided)
    if others := experiment.other_trials(logdir, searcher.trials):
        print(f"{len(others)} other trial(s) in {logdir} are not among this search's trials: left as they are, "
              f"not ranked.")
    return list(records.values())
