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

import os
import socket
from contextlib import contextmanager, suppress
from pathlib import Path

import ray

from hparam_sweep import device, hooks
from hparam_sweep.common import RunStopped, UsageError, write_json

# The trial modules (TensorFlow, seconds to import) are imported in the functions that use them:
# `from hparam_sweep import parallel` stays light, so that the driver starts Ray, and has Ray start the trial
# processes' imports (warm_up_slots), before it imports TensorFlow itself.


@contextmanager
def connected(address=None, warm_up=None):
    """Join the Ray cluster at `address` ("auto": the one `ray start` made on this machine), or
    start one on this machine (None); yields ray.cluster_resources(). A Ray instance this process
    already runs (tests) is used as it is. warm_up: the CPUs of a trial, to warm up its slots
    (warm_up_slots)."""
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
        except (ConnectionError, ray.exceptions.AuthenticationError) as e:
            # Token authentication (`ray start --head` turns it on where the head has a token): Ray raises
            # AuthenticationError when this process wants a token and finds none, and a ConnectionError
            # caused by InvalidAuthToken when the cluster refused its token, or its lack of one.
            direct = isinstance(e, ray.exceptions.AuthenticationError)
            if direct or "InvalidAuthToken" in str(e.__cause__):
                why = e.message if direct else "it refused this process's token, or its lack of one"
                raise UsageError(f"cannot join the Ray cluster at {address} ({why}): it uses token authentication; "
                                 f"set RAY_AUTH_MODE=token and give this process the head's token (its "
                                 f"~/.ray/auth_token, copied to ~/.ray/auth_token here or to a file that "
                                 f"RAY_AUTH_TOKEN_PATH names): see docs/ray.md") from None
            raise UsageError(f"cannot join the Ray cluster at {address} ({e}); start it with `ray start --head`, "
                             f"or leave out --ray-address to start one on this machine") from None
    try:
        if warm_up is not None:
            warm_up_slots(ray.cluster_resources(), warm_up)
        yield ray.cluster_resources()
    finally:
        if started:
            ray.shutdown()


def _import_trial_modules():
    """What a fresh worker process imports before its first trial: the trial modules, TensorFlow."""
    from hparam_sweep import experiment  # noqa: F401 - and through it trial, pipeline, imagecache, TensorFlow


def warm_up_slots(cluster, cpus_per_trial):
    """Have Ray start a worker process for each trial slot of the cluster and import TensorFlow in
    it now, while the driver imports its own: the first trials then start without that wait. Not
    on a cluster with GPUs, where each trial gets a fresh process anyway (see RayExecutor)."""
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
    from hparam_sweep import imagecache, pipeline

    wanted = (settings.data, settings.data_fingerprint, settings.image_size, cache_dir, use_cache)
    if wanted not in _worker_data:
        _worker_data.clear()
        data_dir = Path(settings.data)
        # Every machine reads --data at the driver's path: refuse to train on other images there.
        if pipeline.data_fingerprint(data_dir) != settings.data_fingerprint:
            raise RuntimeError(f"the images in {data_dir} on {socket.gethostname()} are not the driver's: every "
                               f"machine needs the same --data folder at the same path")
        _worker_data[wanted] = pipeline.load_data(data_dir, settings.image_size,
                                                  imagecache.location(cache_dir, use_cache), settings.classes)
    return _worker_data[wanted]


def run_task(task, settings, logdir, verbose, backup_minutes, cache, requested_hooks, histograms=True):
    """One trial, in a Ray worker process: trial.run in the trial's run folder; returns its record.
    cache: (--cache-dir or None, whether to use a cache at all)."""
    import tensorflow as tf

    from hparam_sweep import trial

    # Before this process's TensorFlow touches a GPU: take memory as needed, not the whole card,
    # so that --trials-per-gpu trials fit on one.
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # set already, by this process's earlier trial
            pass
    run_dir = Path(logdir) / task.name
    hooks.install(requested_hooks, attempt=(trial.load(run_dir) or {}).get("attempts", 0) + 1)
    record = trial.run(task.values, settings, worker_data(settings, *cache), run_dir, task.epochs, verbose,
                       backup_minutes, task.origin, histograms)
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


class RayExecutor:
    """The executor that runs a round's trials as concurrent Ray tasks, wherever a slot is free
    (loop.py's executor interface).

    cache: (--cache-dir or None, whether to use a cache), resolved by each worker on its own
    machine. resources: the Ray options of one trial (trial_resources).
    """

    def __init__(self, settings, logdir, cache, verbose, backup_minutes, resources, histograms=True):
        self.settings, self.logdir, self.cache = settings, logdir, cache
        self.verbose, self.backup_minutes, self.resources = verbose, backup_minutes, resources
        self.histograms = histograms
        # Ray gives each GPU task its GPUs through CUDA_VISIBLE_DEVICES, but a worker process's
        # TensorFlow keeps the GPUs it saw first: a reused worker would train its next trial on its
        # last trial's GPU. So a GPU trial runs in a fresh process (max_calls=1, Ray's own default
        # for a task declared with GPUs); CPU-only workers are reused, keeping TensorFlow and images.
        self.remote = ray.remote(max_calls=1 if resources["num_gpus"] else 0)(run_task)

    def run(self, tasks, started):
        from hparam_sweep import trial

        print(f"\nRunning {len(tasks)} trial(s) on Ray, to epoch {tasks[0].epochs}: each takes "
              f"{self.resources['num_cpus']:g} CPU(s) and {self.resources['num_gpus']:g} GPU(s).", flush=True)
        requested_hooks = hooks.requested()
        pending = {}
        for task in tasks:
            # Each task named after its trial: Ray shows each line of its output behind "(NAME pid=N)".
            ref = self.remote.options(**self.resources, retry_exceptions=False, name=task.name).remote(
                task, self.settings, str(self.logdir), self.verbose, self.backup_minutes, self.cache,
                requested_hooks, self.histograms)
            pending[ref] = task
            started(task)
        try:
            while pending:
                [ref], _ = ray.wait(list(pending), num_returns=1)
                task = pending.pop(ref)
                try:
                    record = ray.get(ref)
                except RunStopped as e:  # a fault outside the trial (trial.run records the trial's own errors)
                    raise RunStopped(str(e.cause if isinstance(e, ray.exceptions.RayTaskError) else e)) from None
                except ray.exceptions.RayError as e:  # worker or machine died on every attempt, or Ray gave up
                    record = trial.record_failure(task.values, self.settings, self.logdir / task.name,
                                                  failure_reason(e), task.origin)
                yield record
        except BaseException:
            # Ctrl-C or a driver error: stop the trials still running (they resume from their
            # backups on the next run) rather than leave them writing into the logdir.
            for ref in pending:
                ray.cancel(ref, force=True)
            raise


def driver_off_gpus(cluster):
    """Keep the driver's TensorFlow off the GPUs the trials share (it trains nothing), and say so
    when Ray counts GPUs that TensorFlow cannot use (its CUDA libraries missing, here as in the trials)."""
    import tensorflow as tf

    if cluster.get("GPU", 0) and not tf.config.list_physical_devices("GPU"):
        print(f"Ray sees GPUs but TensorFlow does not, so the trials would train on the CPU: {device.CUDA_FIX}.")
    with suppress(RuntimeError):  # this process's TensorFlow has started already (tests)
        tf.config.set_visible_devices([], "GPU")


def describe(cluster):
    """The cluster in a few words, for the start-up line."""
    nodes = sum(n["Alive"] for n in ray.nodes())
    return f"{cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs on {nodes} node(s)"


def trial_resources(cluster, cpus_per_trial, trials_per_gpu, max_retries):
    """One trial's Ray options: its CPUs, its share of a GPU (none on a cluster without GPUs)."""
    gpus = cluster.get("GPU", 0)
    # A trial runs on one node: Ray would wait forever for a node with more CPUs than any has.
    largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n["Alive"]), default=0)
    if largest < cpus_per_trial:
        raise UsageError(f"--cpus-per-trial {cpus_per_trial:g} is more than any node of the Ray cluster has "
                         f"({largest:g} CPUs): no trial could start")
    return {"num_cpus": cpus_per_trial, "num_gpus": 1 / trials_per_gpu if gpus else 0, "max_retries": max_retries}
