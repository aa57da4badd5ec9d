"""Trials in parallel on Ray: every GPU of a workstation busy, or a grid spread over a cluster.

    pip install -e ".[ray]"
    python train.py --ray                            # a Ray instance on this machine, all its CPUs/GPUs
    python train.py --ray --trials-per-gpu 2         # two trials side by side on each GPU
    python train.py --ray-address auto               # join the cluster `ray start` made on this machine

Ray Core, not Ray Tune: the search (search.py) decides from the logdir's records what runs next,
and each trial writes its own run folder (trial.py), exactly as in the local loop; Ray only runs
a round's trials as tasks, wherever a slot is free. So the logdir stays the one record of the
experiment (a rerun resumes from it, local or on Ray) and the dashboard is what the local run
writes. Tune would keep a second state (its experiment checkpoint, its trial statuses: its
TensorBoard logger marks every ended trial SUCCESS) beside it.

A task whose worker process or machine dies is retried by Ray (`max_retries`) in a fresh
process, and trial.run resumes from the trial's backup; after the last retry the driver records
the trial as FAILURE with the reason, and the search goes on.
"""

import datetime
import fcntl
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import ray

from common import KILL_AT_ENV, PAUSE_AT_ENV, UsageError, read_json, write_json

# The trial modules (TensorFlow, seconds to import) are imported in the functions that use them:
# `import parallel` stays light, so that the driver starts Ray, and has Ray start the trial
# processes' imports (warm_up), before it imports TensorFlow itself.

BEST_FILE = ".best.json"  # the record best_model.keras was saved from (see keep_if_best)
KILL_ATTEMPTS_ENV = "TRIAL_KILL_ATTEMPTS"  # test hook: TRIAL_KILL_AT acts only in a trial's first N attempts
HOOKS = (KILL_AT_ENV, PAUSE_AT_ENV, KILL_ATTEMPTS_ENV)


@contextmanager
def connected(address=None):
    """Join the Ray cluster at `address` ("auto": the one `ray start` made on this machine), or
    start one on this machine (None); yields ray.cluster_resources(). A Ray instance this process
    already runs (tests) is used as it is."""
    started = not ray.is_initialized()
    if started:
        if address is None:
            # "local": always a new instance; address=None would join any cluster `ray start` (or a
            # test) left running on this machine. No dashboard: it needs ray[default], nothing reads it.
            # Ray runs its worker processes at nice 15, below its own daemons and anything else on the
            # machine: the trials, which are the work here, would wait for those. At 0 they share the
            # CPUs as the local loop does.
            options = {"address": "local", "include_dashboard": False, "_system_config": {"worker_niceness": 0}}
        else:
            options = {"address": address}
        try:
            ray.init(**options, logging_level="WARNING", configure_logging=True)
        except ConnectionError as e:
            raise UsageError(f"cannot join the Ray cluster at {address} ({e}); start it with `ray start --head`, "
                             f"or leave out --ray-address to start one on this machine") from None
    try:
        yield ray.cluster_resources()
    finally:
        if started:
            ray.shutdown()


def _import_trial_modules():
    """What a fresh worker process imports before its first trial: the trial modules, TensorFlow."""
    import experiment  # noqa: F401 - and through it trial, pipeline, imagecache, TensorFlow


def warm_up(cluster, cpus_per_trial):
    """Have Ray start a worker process for each trial slot of the cluster and import TensorFlow in
    it now, while the driver imports its own: the first trials then start without that wait. Not
    on a cluster with GPUs, where each trial gets a fresh process anyway (see run_trials)."""
    if cluster.get("GPU", 0):
        return
    slots = sum(int(n["Resources"].get("CPU", 0) // cpus_per_trial) for n in ray.nodes() if n["Alive"])
    task = ray.remote(_import_trial_modules).options(num_cpus=cpus_per_trial, name="start-up")
    for _ in range(slots):
        task.remote()


_worker_data = {}  # {what was asked: (train, validation) ImageSets}: one per worker process, reused by its next trial


def worker_data(settings, cache_dir, use_cache):
    """The (train, validation) ImageSets, loaded once per worker process from this machine's decode
    cache (imagecache.py): the first process of a machine decodes them into it, the others wait
    for it and map the files. cache_dir None: this machine's default cache folder."""
    import imagecache
    import pipeline

    wanted = (settings.data, settings.data_fingerprint, settings.image_size, cache_dir, use_cache)
    if wanted not in _worker_data:
        _worker_data.clear()
        data_dir = Path(settings.data)
        # Every machine reads --data at the driver's path: refuse to train on other images there.
        if pipeline.data_fingerprint(data_dir) != settings.data_fingerprint:
            raise RuntimeError(f"the images in {data_dir} on {socket.gethostname()} are not the driver's: every "
                               f"machine needs the same --data folder at the same path")
        _worker_data[wanted] = pipeline.load_data(data_dir, settings.image_size,
                                                  imagecache.location(cache_dir, use_cache))
    return _worker_data[wanted]


def keep_if_best(logdir, names, settings):
    """on_success for a worker: save the model as best_model.keras if it ranks first, as results.csv
    ranks, among the finished trials of this grid; concurrent workers take turns (flock).

    The trials finishing at the same moment have not written their trial.json yet when another
    one compares, so the record the current best_model.keras came from is kept beside it (BEST_FILE).
    """
    import experiment
    import search

    def keep(model, record):
        if record["epochs"] != settings.epochs:  # only a fully trained trial can be the best
            return
        with (logdir / (BEST_FILE + ".lock")).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            others = [r for n, r in experiment.reusable_records(logdir, names, settings).items() if n != record["name"]]
            best = read_json(logdir / BEST_FILE)
            if best and best.get("settings") == record["settings"] and best["name"] != record["name"]:
                others.append(best)
            if search.ranked([*others, record])[0] is record:
                experiment.save_best(logdir, model)
                write_json(logdir / BEST_FILE, record)

    return keep


def run_task(task, settings, logdir, names, verbose, backup_minutes, cache, hooks):
    """One trial, in a Ray worker process: trial.run in the trial's run folder; returns its record.
    cache: (--cache-dir or None, whether to use a cache at all)."""
    import tensorflow as tf

    import trial

    # Before this process's TensorFlow touches a GPU: take memory as needed, not the whole card,
    # so that --trials-per-gpu trials fit on one.
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # set already, by this process's earlier trial
            pass
    if settings.deterministic:
        tf.config.experimental.enable_op_determinism()
    run_dir = Path(logdir) / task.name
    earlier = trial.load(run_dir) or {}
    for name in HOOKS:
        os.environ.pop(name, None)
        if name in hooks:
            os.environ[name] = hooks[name]
    if earlier.get("attempts", 0) >= int(hooks.get(KILL_ATTEMPTS_ENV, 1 << 30)):
        os.environ.pop(KILL_AT_ENV, None)
    trial._reached.clear()  # hook counts are per trial, also in a reused worker process
    record = trial.run(task.values, settings, worker_data(settings, *cache), run_dir, task.epochs, verbose,
                       keep_if_best(Path(logdir), names, settings), backup_minutes)
    # Where it ran: a trial's record says which machine and process trained it.
    context = ray.get_runtime_context()
    record["worker"] = {"node_id": context.get_node_id(), "host": socket.gethostname(), "pid": os.getpid(),
                        "gpus": context.get_accelerator_ids().get("GPU", [])}
    write_json(run_dir / trial.TRIAL_FILE, record)
    return record


def failure_reason(error):
    """One line saying why Ray gave up on a task."""
    cause = getattr(error, "cause", None) if isinstance(error, ray.exceptions.RayTaskError) else None
    error = cause or error
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}".strip()


def seconds_between(record):
    try:
        return (datetime.datetime.fromisoformat(record["finished"])
                - datetime.datetime.fromisoformat(record["started"])).total_seconds()
    except (KeyError, TypeError, ValueError):
        return 0.0


def run_trials(searcher, trials, settings, hparams, logdir, cache, verbose, backup_minutes, resources, report):
    """The local loop's job (train.run_trials) with each round's trials run as concurrent Ray tasks.

    cache: (--cache-dir or None, whether to use a cache), for the workers' worker_data.
    resources: the Ray options of one trial (num_cpus, num_gpus, max_retries). report: train.py's
    console helpers (reuse_records, outcome_line, record_decisions), so that both runners print
    the same lines.
    Returns the records of all trials; results.csv is written here only, by the driver.
    """
    import experiment
    import search
    import trial

    records = report.reuse_records(logdir, trials, settings)
    # Ray gives each GPU task its GPUs through CUDA_VISIBLE_DEVICES, but a worker process's
    # TensorFlow keeps the GPUs it saw first: a reused worker would train its next trial on its last
    # trial's GPU. So a GPU trial runs in a fresh process (max_calls=1, Ray's own default for a
    # task declared with GPUs); CPU-only workers are reused, keeping their TensorFlow and images.
    remote = ray.remote(max_calls=1 if resources["num_gpus"] else 0)(run_task)
    hooks = {name: os.environ[name] for name in HOOKS if name in os.environ}
    names = list(trials)

    def trained():
        return sum(search.epochs_trained(r) for r in records.values() if r["status"] == "success")

    planned = searcher.planned_epochs(len(trials))
    decided = len(searcher.decisions(trials, records))
    start, done_before = time.monotonic(), trained()
    for tasks in searcher.rounds(trials, records):
        print(f"\nRunning {len(tasks)} trial(s) on Ray, to epoch {tasks[0].epochs}: "
              f"each takes {resources['num_cpus']:g} CPU(s) and {resources['num_gpus']:g} GPU(s).", flush=True)
        # Each task named after its trial: Ray shows each line of the trial's output behind "(NAME pid=N)".
        pending = {remote.options(**resources, retry_exceptions=False, name=task.name).remote(
                       task, settings, str(logdir), names, verbose, backup_minutes, cache, hooks): task
                   for task in tasks}
        try:
            for k in range(1, len(tasks) + 1):
                [ref], _ = ray.wait(list(pending), num_returns=1)
                task = pending.pop(ref)
                try:
                    record = ray.get(ref)
                except ray.exceptions.RayError as e:  # worker or machine died on every attempt, or Ray gave up
                    record = trial.record_failure(task.values, settings, logdir / task.name, failure_reason(e))
                records[task.name] = record
                experiment.write_results(logdir, search.ranked(list(records.values())), hparams)

                eta = (time.monotonic() - start) / max(1, trained() - done_before) * max(0, planned - trained())
                print(report.outcome_line(f"[{k}/{len(tasks)}]", task.values, record, seconds_between(record), eta),
                      flush=True)
        except BaseException:
            # Ctrl-C or a driver error: stop the trials still running (they resume from their
            # backups on the next run) rather than leave them writing into the logdir.
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        decided = report.record_decisions(searcher, trials, records, decided, settings, logdir, eta)
    experiment.write_results(logdir, search.ranked(list(records.values())), hparams)
    return list(records.values())


def trial_resources(cluster, cpus_per_trial, trials_per_gpu, max_retries):
    """One trial's Ray options: its CPUs, its share of a GPU (none on a cluster without GPUs)."""
    gpus = cluster.get("GPU", 0)
    # A trial runs on one node: Ray would wait forever for a node with more CPUs than any has.
    largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
    if largest < cpus_per_trial:
        raise UsageError(f"--cpus-per-trial {cpus_per_trial:g} is more than any node of the Ray cluster has "
                         f"({largest:g} CPUs): no trial could start")
    return {"num_cpus": cpus_per_trial, "num_gpus": 1 / trials_per_gpu if gpus else 0, "max_retries": max_retries}
