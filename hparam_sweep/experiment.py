"""The experiment: the logdir as a whole, which the dashboard shows as one HParams experiment.

    LOGDIR/events.out.tfevents*   hparams_config: every hparam's domain and every metric
    LOGDIR/experiment.json        the settings and domains the trials were run with
    LOGDIR/results.csv            one row per trial of the current search, ranked
    LOGDIR/best_model.keras       a copy of rank 1's model (keep_best)
    LOGDIR/.best.json             the record it was copied from
    LOGDIR/halving.json           --search halving: each rung's decision
    LOGDIR/<trial name>/          one run folder per trial (trial.py)
    LOGDIR/../.<name>.lock        held while a process works on LOGDIR

Only comparable trials share a logdir: a rerun with other settings is refused.
"""

import contextlib
import csv
import datetime
import fcntl
import json
import os
import shutil

import tensorflow as tf
from tensorboard.plugins.hparams import summary_v2 as hp

from hparam_sweep import metrics, sampler, trial
from hparam_sweep.common import FINISHED, UsageError, made, read_json, replaced, write_json, writing
from hparam_sweep.search import fully_trained

EXPERIMENT_FILE = "experiment.json"
RESULTS_FILE = "results.csv"
DECISIONS_FILE = "halving.json"
BEST_MODEL_FILE = "best_model.keras"
BEST_FILE = ".best.json"  # the record best_model.keras was copied from (see keep_best)


def recorded_settings(logdir, recorded):
    """Every (source, settings) that earlier runs left in logdir: experiment.json's (`recorded`, as
    read) and each trial's.

    The trials' own records are read too, so that a deleted or damaged experiment.json can never
    let trials with other settings mix into this experiment.
    """
    found = []
    if recorded and "settings" in recorded:
        found.append((EXPERIMENT_FILE, recorded["settings"]))
    for path in sorted(logdir.glob(f"*/{trial.TRIAL_FILE}")):
        record = read_json(path)
        if record and "settings" in record:
            found.append((path.parent.name, record["settings"]))
    return found


def recorded_search(logdir, recorded, search):
    """The search that earlier runs in logdir made, as far as the logdir tells; `search` where
    nothing tells otherwise. experiment.json says (`recorded`, as read; older ones, without the
    field, were grids); without it (deleted or damaged), halving.json's rungs or a trial trained to
    fewer than its settings' epochs (and not stopped early) say that a halving search ran there."""
    if recorded:
        return recorded.get("search", {"search": "grid"})
    rungs = [d["epochs"] for d in read_json(logdir / DECISIONS_FILE) or []]
    records = [read_json(path) or {} for path in logdir.glob(f"*/{trial.TRIAL_FILE}")]
    stopped_short = any(r.get("status") == "success" and not fully_trained(r, r["settings"]["epochs"])
                        for r in records)
    if not rungs and not stopped_short:
        return search
    if search["search"] == "halving" and search["rungs"][:len(rungs)] == rungs:
        return search
    return {"search": "halving", "rungs": rungs}


def setting_changes(earlier, current):
    """"name old -> new" for each setting that differs between two records (none: comparable
    trials); a field that a record leaves out (trial.ADDED_LATER) reads as its default."""
    defaults = json.loads(json.dumps(trial.ADDED_LATER))  # as JSON holds them: a tuple as a list
    old, new = {**defaults, **earlier}, {**defaults, **current}
    return [f"{k} {old.get(k)} -> {new.get(k)}" for k in dict.fromkeys([*new, *old]) if old.get(k) != new.get(k)]


def prepare(logdir, settings, hparams, search, domains=None):
    """Create or check the experiment: earlier trials' settings and the search must match, its
    hparams_config is current. search is the search's and sampler's description (search.Grid.describe()),
    domains the sampler's (by default the grid's: each hparam's grid values)."""
    made(logdir)
    domains = domains or sampler.GridSampler(hparams).domains()
    shown = metrics.dashboard(settings.objective, settings.early_stopping)
    current = {"settings": settings.record(), "domains": domains, "search": search,
               "metrics": [[m.as_proto().name.group, m.as_proto().name.tag, m.as_proto().display_name] for m in shown]}
    recorded = read_json(logdir / EXPERIMENT_FILE)
    earlier_search = recorded_search(logdir, recorded, search)
    if earlier_search != search:
        raise UsageError(
            f"{logdir} holds a search with other settings ({earlier_search} -> {search}): its decisions would not "
            f"hold. Use another --logdir, or --restart to move it aside"
        )
    for source, earlier in recorded_settings(logdir, recorded):
        if changed := setting_changes(earlier, current["settings"]):
            raise UsageError(
                f"{logdir} holds trials run with other settings ({'; '.join(changed)}, see {source}): "
                f"their results would not be comparable. Use another --logdir, or --restart to move them aside"
            )
    if recorded != current:
        # The dashboard reads the experiment's domains and metrics from the logdir itself (the
        # parent of the run directories); a later config there supersedes an earlier one. Written
        # again whenever either changes, e.g. when a release adds a metric to an older experiment.
        with writing(f"cannot write the hparams_config in {logdir}", tf.errors.OpError):
            writer = tf.summary.create_file_writer(str(logdir))
            with writer.as_default():
                hp.hparams_config(hparams=hparams, metrics=shown)
            writer.close()
        write_json(logdir / EXPERIMENT_FILE, current)


@contextlib.contextmanager
def locked(logdir):
    """Hold an exclusive lock on the logdir while the block runs.

    flock locks die with their process, so a crashed or killed run never leaves a stale lock.
    The lock file sits beside the logdir so that --restart can move the logdir under it, and is
    named after the logdir's real path, so that a symlink to it takes the same lock.
    """
    real = logdir.resolve()
    with writing(f"cannot lock {logdir}"):
        real.parent.mkdir(parents=True, exist_ok=True)
        lock_file = (real.parent / f".{real.name}.lock").open("a+")
    with lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            owner = lock_file.read().strip() or "another process"
            raise UsageError(f"{logdir} is in use by {owner}; wait for it to finish or use another --logdir") from None
        # Unbuffered: the note is only for whoever is refused, and a full disk stops the run at its first record.
        with contextlib.suppress(OSError):
            os.ftruncate(lock_file.fileno(), 0)
            os.write(lock_file.fileno(), f"train.py (pid {os.getpid()})".encode())
        yield


def move_aside(logdir):
    """--restart: move earlier results to a dated sibling folder (never delete them)."""
    if not logdir.exists() or not any(logdir.iterdir()):
        return None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = logdir.with_name(f"{logdir.name}-before-{stamp}")
    n = 1
    while target.exists():  # a second --restart within the same second
        n += 1
        target = logdir.with_name(f"{logdir.name}-before-{stamp}-{n}")
    with writing(f"cannot move {logdir} aside"):
        logdir.rename(target)
    return target


def reusable_records(logdir, trials, settings):
    """{name: record} of the trials in logdir that were run with these settings and ended."""
    records = {}
    for name in trials:
        record = trial.load(logdir / name)
        if record and record["status"] in FINISHED and not setting_changes(record["settings"], settings.record()):
            records[name] = record
    return records


def other_trials(logdir, trials):
    """Names of run folders in logdir that are not trials of this search."""
    return {p.name for p in logdir.iterdir() if (p / trial.TRIAL_FILE).exists()} - set(trials)


def write_results(logdir, ranked_records, hparams, settings):
    """results.csv: one row per trial of this search, in rank order, every hparam, the status and the
    summary metrics that the settings' trials report (metrics.summary)."""
    path = logdir / RESULTS_FILE
    summary = metrics.summary(settings.objective, settings.early_stopping)
    columns = ["rank", "run"] + [h.name for h in hparams] + ["status"] + summary + ["error"]
    with replaced(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for rank, r in enumerate(ranked_records, 1):
            writer.writerow(
                {"rank": rank, "run": r["name"], **r["hparams"], "status": r["status"], **r.get("metrics", {}),
                 "error": r.get("error") or ""}
            )


def recorded_decisions(logdir):
    """How many rungs halving.json records (0 without one)."""
    return len(read_json(logdir / DECISIONS_FILE) or [])


def decisions_json(decisions):
    """search.Decisions as halving.json holds them."""
    return [{"epochs": d.epochs, "trained": d.trained, "promoted": d.promoted, "stopped": d.stopped} for d in decisions]


def write_decisions(logdir, decisions):
    """halving.json: each rung's epochs, the trials trained to it, who went on and who stopped."""
    if decisions:
        write_json(logdir / DECISIONS_FILE, decisions_json(decisions))


def rank_one(ranked, epochs):
    """results.csv's rank 1 (`ranked`: search.ranked's records) if it trained all `epochs` (or as far as early
    stopping let it), else None."""
    first = ranked[0] if ranked else None
    return first if first and fully_trained(first, epochs) else None


def keep_best(logdir, ranked, epochs):
    """The one rule for best_model.keras, whichever executor ran the trials: a copy of rank 1's
    model (rank_one), once it has one. Called by the loop, the only process that writes it, after
    every trial; .best.json holds the record it was copied from. A trial trained before trials
    kept their own models has none: best_model.keras then stays as it is (chosen_trial tells)."""
    first = rank_one(ranked, epochs)
    if first is None or not (source := logdir / first["name"] / trial.MODEL_FILE).is_file():
        return
    copied = read_json(logdir / BEST_FILE) or {}
    if (logdir / BEST_MODEL_FILE).is_file() and (copied.get("name"), copied.get("finished")) == (
            first["name"], first.get("finished")):
        return
    # A failure is not a trial's fault (RunStopped): every trial keeps its record and model, for the rerun.
    with replaced(logdir / BEST_MODEL_FILE, f"cannot keep the best model in {logdir / BEST_MODEL_FILE}") as tmp:
        shutil.copyfile(source, tmp)
    write_json(logdir / BEST_FILE, first)


def chosen_trial(logdir, ranked, epochs):
    """(rank_one's name, else None; the trial whose model best_model.keras holds, as .best.json
    says, else None)."""
    first = rank_one(ranked, epochs)
    kept = (read_json(logdir / BEST_FILE) or {}).get("name") if (logdir / BEST_MODEL_FILE).exists() else None
    return first and first["name"], kept
