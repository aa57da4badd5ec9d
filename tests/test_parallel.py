"""train.py --ray: trials run concurrently as Ray tasks, on a two-node cluster simulated on this machine.

Ray starts once for the session: ray.cluster_utils.Cluster with two nodes of one CPU each, so
that two trials run at once, one on each node.
"""

import datetime
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import metric, trial_outcome
from test_resume import wait_for_pauses
from test_train import FAST, check_a_fault_outside_the_trial_stops_the_run_and_fails_no_trial, read_results, trial_record

from hparam_sweep import experiment, hooks, imagecache, metrics as M, pipeline, runlog, search, trial
import train

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402 - only once Ray is known to be installed

from hparam_sweep import parallel  # noqa: E402 - imports Ray

ROOT = Path(__file__).resolve().parent.parent
FOUR = ["--grid", "num_units=8,16", "--grid", "dropout=0.1", "--grid", "optimizer=adam,sgd", "--grid", "learning_rate=0.01"]
TWO = ["--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam,sgd", "--grid", "learning_rate=0.01"]


@pytest.fixture(scope="session")
def cluster():
    """Two Ray nodes on this machine, one CPU each; ray.init joined to them for the whole session."""
    # Ray's memory monitor kills workers when the machine's memory is nearly full: on a small
    # shared CI machine that would be a flaky test, not the behaviour under test.
    os.environ["RAY_memory_monitor_refresh_ms"] = "0"
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    ray.init(address=nodes.address, logging_level="WARNING")
    yield nodes
    ray.shutdown()
    nodes.shutdown()


class Together:
    """Beside a driver, in a thread: lets trials paused at TRIAL_PAUSE_AT=NAME:N:flag go on only in
    pairs. A paused trial waits until a second one is paused too (two trials then ran at once), and
    both go on; after that, every pause is let go at once. After `timeout` s without a pair it lets
    them go anyway, so that a failing test ends: `seen` then stays False."""

    def __init__(self, flag, timeout=240):
        self.flag, self.seen, self.stop = flag, False, threading.Event()
        self.deadline = time.monotonic() + timeout
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            paused = list(self.flag.parent.glob(f"{self.flag.name}.*"))
            self.seen = self.seen or len(paused) >= 2
            if paused and (self.seen or time.monotonic() > self.deadline):
                for path in paused:
                    path.unlink(missing_ok=True)
            self.stop.wait(0.05)

    def close(self):
        self.stop.set()
        self.thread.join()


def interval(record):
    return tuple(datetime.datetime.fromisoformat(record[k]).timestamp() for k in ("started", "finished"))


def test_grid_runs_trials_concurrently_on_both_nodes(cluster, dataset, tmp_path, tensorboard, monkeypatch, capsys):
    logdir, cache = tmp_path / "logs", tmp_path / "cache"
    # The driver decodes nothing: the workers take the images from their machine's decode cache.
    monkeypatch.setattr(pipeline, "decoded_batches", lambda *a: pytest.fail("the driver decoded the images"))
    # Each trial pauses once trained, before it keeps its model, until another one is there too:
    # two trials ran side by side, and they finish at the same moment.
    together = Together(tmp_path / "trained")
    monkeypatch.setenv(hooks.PAUSE_AT_ENV, f"trained:1:{tmp_path / 'trained'}")
    assert train.main(["--ray", "--data", str(dataset), "--logdir", str(logdir), "--cache-dir", str(cache), *FAST, *FOUR]) == 0
    together.close()
    monkeypatch.delenv(hooks.PAUSE_AT_ENV)
    out = capsys.readouterr().out
    assert "Running 4 trial(s) on Ray" in out and out.count(" -> accuracy ") == 4
    # A trial needing more CPUs than any one node has could never start: refused at once.
    assert train.main(["--ray", "--cpus-per-trial", "2", "--data", str(dataset), "--logdir", str(logdir), *FAST, *FOUR]) == 2
    assert "more than any node of the Ray cluster has (1 CPUs)" in capsys.readouterr().err

    records = [trial_record(logdir, row["run"]) for row in read_results(logdir)]
    assert [r["status"] for r in records] == ["success"] * 4 and all(r["attempts"] == 1 for r in records)
    assert together.seen  # two trials were paused at once: they ran side by side
    # Trials ran on both nodes.
    assert {r["worker"]["node_id"] for r in records} == {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    # Both nodes are this machine: one worker decoded the images into its cache, the other mapped them.
    [key] = cache.glob(f"*/{imagecache.KEY_FILE}")
    assert json.loads(key.read_text())["built_by"]["pid"] in {r["worker"]["pid"] for r in records}
    # Each trial kept its model, and best_model.keras is results.csv's rank 1's.
    assert all((logdir / r["name"] / trial.MODEL_FILE).is_file() for r in records)
    assert json.loads((logdir / experiment.BEST_FILE).read_text())["name"] == records[0]["name"]
    best = (logdir / experiment.BEST_MODEL_FILE).read_bytes()
    assert best == (logdir / records[0]["name"] / trial.MODEL_FILE).read_bytes()

    # The dashboard: four sessions, each ended SUCCESS with trial.json's metrics.
    groups = tensorboard(logdir).wait_for(4)
    assert len(groups) == 4
    by_name = {g["name"]: g["sessions"][0] for g in groups}
    for r in records:
        assert by_name[r["name"]]["status"] == "STATUS_SUCCESS"
        shown = {m["name"]["tag"]: m["value"] for m in by_name[r["name"]]["metricValues"] if not m["name"].get("group")}
        assert shown["accuracy"] == pytest.approx(r["metrics"]["accuracy"])


@pytest.mark.parametrize("retries", [1, 0])
def test_worker_killed_mid_trial_is_retried_from_its_backup_or_recorded_failed(cluster, dataset, tmp_path, tensorboard,
                                                                               monkeypatch, capsys, retries):
    # Every trial's worker process SIGKILLs itself right after its first backup (epoch 1's end),
    # in its first attempt only.
    monkeypatch.setenv(hooks.KILL_AT_ENV, "backup:1")
    monkeypatch.setenv("TRIAL_KILL_ATTEMPTS", "1")
    logdir = tmp_path / "logs"
    code = train.main(["--ray", "--max-retries", str(retries), "--data", str(dataset), "--logdir", str(logdir), *FAST, *TWO])
    records = [trial_record(logdir, row["run"]) for row in read_results(logdir)]
    groups = tensorboard(logdir).wait_for(2)
    assert len(groups) == 2
    if retries:
        # Retried in a fresh process, resumed from the backup at the end of epoch 1.
        assert code == 0
        assert [(r["status"], r["attempts"], r["resumed_from_step"]) for r in records] == [("success", 2, 2)] * 2
        assert {g["sessions"][0]["status"] for g in groups} == {"STATUS_SUCCESS"}
    else:
        # No retry left: the driver records the failure with Ray's reason, and the grid goes on.
        assert code == train.EXIT_TRIAL_FAILED
        assert [r["status"] for r in records] == ["failure"] * 2
        assert all(r["error"].startswith("WorkerCrashedError") for r in records), [r["error"] for r in records]
        assert not (logdir / records[0]["name"] / trial.BACKUP_DIR).exists()
        assert {g["sessions"][0]["status"] for g in groups} == {"STATUS_FAILURE"}
        assert capsys.readouterr().out.count("FAILED: WorkerCrashedError") == 2


def test_each_gpu_trial_runs_in_a_fresh_process_on_the_gpu_ray_gave_it(cluster, dataset, tmp_path, capsys):
    """A worker process's TensorFlow keeps the GPUs it first saw: a reused worker would train its
    next trial on its last trial's GPU, whatever CUDA_VISIBLE_DEVICES Ray sets for the new one."""
    # A third node with two GPUs as Ray counts them (TensorFlow finds no CUDA here and trains on
    # the CPU): GPU trials can only run there, one at a time on its one CPU.
    node = cluster.add_node(num_cpus=1, num_gpus=2)
    cluster.wait_for_nodes()
    try:
        logdir = tmp_path / "logs"
        argv = ["--ray", "--data", str(dataset), "--logdir", str(logdir), *FAST, *TWO, "--grid", "optimizer=adam,sgd,rmsprop"]
        assert train.main(argv) == 0
    finally:
        cluster.remove_node(node)
    # Ray counts two GPUs that TensorFlow cannot use (on a machine without CUDA): the start-up says so.
    hint = ("Ray sees GPUs but TensorFlow does not, so the trials would train on the CPU: install TensorFlow's "
            'CUDA libraries with pip install -e ".[gpu]".')
    assert (hint in capsys.readouterr().out) == (not tf.config.list_physical_devices("GPU"))
    records = [trial_record(logdir, row["run"]) for row in read_results(logdir)]
    assert len(records) == 3 and all(r["status"] == "success" for r in records)
    assert {r["worker"]["node_id"] for r in records} == {node.node_id}
    assert len({r["worker"]["pid"] for r in records}) == 3  # one process per trial, none reused
    assert all(len(r["worker"]["gpus"]) == 1 for r in records)  # --trials-per-gpu 1: a whole GPU each


def test_driver_killed_mid_grid_resumes_exactly_as_the_local_loop_runs(cluster, dataset, tmp_path, tensorboard, capsys):
    args = ["--data", str(dataset), *FAST, *TWO, "--deterministic"]
    logdir = tmp_path / "logs"
    # Both trials pause after their first epoch is backed up and logged; then the driver is killed.
    paused = tmp_path / "paused"
    driver = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--ray-address", cluster.address, "--logdir", str(logdir), *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, hooks.PAUSE_AT_ENV: f"history:2:{paused}"},
    )
    wait_for_pauses(driver, paused, count=2)  # both trials, side by side
    # A second driver on the same logdir is refused while the first holds it.
    assert train.main(["--ray", "--logdir", str(logdir), *args]) == train.EXIT_USAGE
    assert f"in use by train.py (pid {driver.pid})" in capsys.readouterr().err
    driver.send_signal(signal.SIGKILL)
    driver.communicate(timeout=60)

    assert train.main(["--ray", "--logdir", str(logdir), *args]) == 0
    names = [row["run"] for row in read_results(logdir)]
    resumed = [trial_record(logdir, name) for name in names]
    assert [r["resumed_from_step"] for r in resumed] == [2, 2], resumed
    groups = tensorboard(logdir).wait_for(2)
    assert len(groups) == 2  # one session per trial, not one per attempt

    # The same grid in the local loop: bit-identical metrics, history and curves.
    local = tmp_path / "local"
    assert train.main(["--logdir", str(local), *args]) == 0
    for name in names:
        assert trial_outcome(logdir / name) == trial_outcome(local / name), name


def test_without_ray_flags_ray_is_never_imported(dataset, tmp_path):
    logdir = tmp_path / "logs"
    script = (
        "import sys, train\n"
        "try:\n    train.main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"assert train.main({['--data', str(dataset), '--logdir', str(logdir), *FAST, *TWO]!r}) == 0\n"
        "print('ray imported' if 'ray' in sys.modules else 'ray not imported')\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.rstrip().endswith("ray not imported")


def test_halving_on_ray_decides_and_trains_exactly_as_the_local_loop(cluster, dataset, tmp_path, tensorboard,
                                                                      monkeypatch, capsys):
    args = ["--data", str(dataset), *FAST, *FOUR, "--epochs", "3", "--search", "halving", "--min-epochs", "1",
            "--halving-rate", "2", "--deterministic"]
    logdir, local = tmp_path / "ray", tmp_path / "local"
    # Each round's records as the loop holds them when it decides the rung (trial.json keeps only
    # a trial's last rung: its start and end times, the worker that ran it). The first call is the
    # loop's start, before any round.
    rounds, decisions_of = [], search.Halving.decisions
    monkeypatch.setattr(search.Halving, "decisions",
                        lambda self, records: rounds.append(dict(records)) or decisions_of(self, records))
    assert train.main(["--ray", "--logdir", str(logdir), *args]) == 0
    monkeypatch.undo()
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("Running ")] == [
        f"Running {n} trial(s) on Ray, to epoch {e}: each takes 1 CPU(s) and 0 GPU(s)." for n, e in [(4, 1), (2, 2), (1, 3)]]
    assert train.main(["--logdir", str(local), *args]) == 0

    # The same rungs, decided the same way.
    decisions = json.loads((logdir / experiment.DECISIONS_FILE).read_text())
    assert decisions == json.loads((local / experiment.DECISIONS_FILE).read_text())
    assert [(d["epochs"], len(d["trained"]), len(d["promoted"])) for d in decisions] == [(1, 4, 2), (2, 2, 1), (3, 1, 0)]
    (winner,) = decisions[-1]["trained"]
    epochs = {name: max(d["epochs"] for d in decisions if name in d["trained"]) for name in decisions[0]["trained"]}

    # The same ranking, and every trial bit-identical to the local loop's: metrics, history, curves,
    # each epoch's point logged once (the continued trials' curves go on where they stopped).
    rows, local_rows = read_results(logdir), read_results(local)
    assert [r["run"] for r in rows] == [r["run"] for r in local_rows] and rows[0]["run"] == winner
    for row, local_row in zip(rows, local_rows):
        del row[M.WALL_TIME], local_row[M.WALL_TIME]
        assert row == local_row
    for name, trained in epochs.items():
        assert trial_outcome(logdir / name) == trial_outcome(local / name), name
        curves = runlog.read_curves(logdir / name)
        assert len(curves) == 4 and all([step for step, _ in points] == list(range(trained)) for points in curves.values())
        record = trial_record(logdir, name)
        assert (record["status"], record["epochs"]) == ("success", trained)
        assert record["attempts"] == sum(name in d["trained"] for d in decisions)  # one attempt per rung, none lost

    # Each rung's trials ran side by side: overlapping in time, or on both nodes.
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    for decision, records in zip(decisions, rounds[1:]):
        if len(decision["trained"]) > 1:
            ran = [records[name] for name in decision["trained"]]
            spans = sorted(interval(r) for r in ran)
            overlapped = any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))
            assert overlapped or {r["worker"]["node_id"] for r in ran} == nodes, (decision["epochs"], spans)

    # best_model.keras is the fully trained winner's model: the local loop's, weight for weight.
    assert json.loads((logdir / experiment.BEST_FILE).read_text())["name"] == winner
    ray_weights, local_weights = (keras.models.load_model(d / experiment.BEST_MODEL_FILE).get_weights()
                                  for d in (logdir, local))
    assert len(ray_weights) == len(local_weights) and all(map(np.array_equal, ray_weights, local_weights))

    # The dashboard: one session per trial, SUCCESS, with how many epochs it trained.
    groups = tensorboard(logdir).wait_for(4)
    assert len(groups) == 4 and all(len(g["sessions"]) == 1 for g in groups)
    assert {g["name"]: (g["sessions"][0]["status"], metric(g["metricValues"], M.EPOCHS)) for g in groups} == {
        name: ("STATUS_SUCCESS", trained) for name, trained in epochs.items()}


def test_a_ray_run_shows_each_trials_epochs_by_name_and_no_tensorflow_noise(cluster, dataset, tmp_path):
    # The driver as a user starts it, its output into pipes (as into a log file).
    argv = ["--ray-address", cluster.address, "--data", str(dataset), "--logdir", str(tmp_path / "logs"),
            *[a for a in FAST if a != "--quiet"], "--epochs", "1", *TWO]
    # Without the Ray settings an earlier test's train.main left in this process's environment.
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_DEDUP_LOGS", "RAY_COLOR_PREFIX")}
    run = subprocess.run([sys.executable, str(ROOT / "train.py"), *argv], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    # Every trial's epoch line, behind its trial's name: Ray's deduplication would have shown one
    # of them as "[repeated 2x across cluster]". No colour codes into a pipe.
    for name in ("adam-lr0.01-u8-d0.1", "sgd-lr0.01-u8-d0.1"):
        assert re.search(rf"^\({re.escape(name)} pid=\d+\) 2/2 - .* val_accuracy: ", run.stdout, re.M), run.stdout
    assert "repeated" not in run.stdout + run.stderr and "\x1b" not in run.stdout + run.stderr
    # The workers' TensorFlow start-up lines (absl, no CUDA driver on a machine without a GPU) are filtered.
    assert not re.search(r"absl::InitializeLog|cudart_stub|cuInit: INTERNAL", run.stderr), run.stderr


def test_a_ray_started_by_the_driver_runs_trials_at_the_local_loops_priority():
    # Ray's default puts its workers at nice 15, below its own daemons and whatever else runs
    # (TensorBoard beside the sweep): the trials would wait for them. A Ray of its own, in a fresh
    # process: this session's cluster is joined, not started, by parallel.connected.
    script = ("import os, ray\nfrom hparam_sweep import parallel\n"
              "def niceness():\n    return os.nice(0)\n"
              "with parallel.connected():\n"
              "    print('worker', ray.get(ray.remote(niceness).remote()), 'driver', niceness())\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    worker, driver = re.search(r"^worker (\d+) driver (\d+)$", out.stdout, re.M).groups()
    assert worker == driver, out.stdout


def test_a_fault_outside_the_trial_stops_the_ray_run_and_fails_no_trial(cluster, dataset, tmp_path, capsys):
    """As in the local loop (test_train.py): a trained model that cannot be saved in the worker, then a
    best model that the driver cannot write, stop the run; Ray does not record the trained trial as
    failed nor delete its backup."""
    logdir = tmp_path / "logs"
    argv = ["--ray", "--data", str(dataset), "--logdir", str(logdir), *FAST,
            "--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam", "--grid", "learning_rate=0.01"]
    check_a_fault_outside_the_trial_stops_the_run_and_fails_no_trial(argv, logdir, capsys)


@pytest.mark.usefixtures("cluster")
def test_trials_share_a_gpu_as_asked_and_none_on_a_cluster_without():
    for per_gpu, share in [(1, 1.0), (2, 0.5), (4, 0.25)]:
        resources = parallel.trial_resources({"CPU": 2, "GPU": 2}, 1, per_gpu, 3)
        assert resources == {"num_cpus": 1, "num_gpus": share, "max_retries": 3}
    assert parallel.trial_resources({"CPU": 2}, 1, 2, 0)["num_gpus"] == 0


def test_a_worker_refuses_data_other_than_the_drivers(dataset):
    settings = trial.Settings(data=str(dataset), data_fingerprint="the driver's", image_size=24, batch_size=8,
                              epochs=1, steps_per_epoch=1, seed=1, deterministic=False, mixed_precision=False,
                              xla=False, augment_in_model=False)
    with pytest.raises(RuntimeError, match=f"the images in {dataset} on .* are not the driver's"):
        parallel.worker_data(settings, None, False)


def test_ctrl_c_cancels_the_trials_running_on_ray(cluster, dataset, tmp_path, monkeypatch):
    """Ctrl-C in the driver stops its running trials at once, while it is still connected to Ray (a
    dead driver's tasks would end anyway): none is left writing into the logdir."""
    settings = trial.Settings(data=str(dataset), data_fingerprint=pipeline.data_fingerprint(dataset), image_size=24,
                              batch_size=8, epochs=2, steps_per_epoch=2, seed=1, deterministic=False,
                              mixed_precision=False, xla=False, augment_in_model=False)
    executor = parallel.RayExecutor(settings, tmp_path / "logs", (None, False), 0, 5.0,
                                    {"num_cpus": 1, "num_gpus": 0, "max_retries": 0})
    tasks = [search.Task(o, {"num_units": 8, "dropout": 0.1, "optimizer": o, "learning_rate": 0.01}, 2)
             for o in ("adam", "sgd")]
    flag, paused = tmp_path / "started", []
    monkeypatch.setenv(hooks.PAUSE_AT_ENV, f"history:1:{flag}")

    def ctrl_c_once_both_run():
        while len(found := list(tmp_path.glob("started.*"))) < 2:
            time.sleep(0.05)
        paused.extend(int(p.suffix[1:]) for p in found)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=ctrl_c_once_both_run, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        for _ in executor.run(tasks, lambda task: None):
            pass
    deadline = time.monotonic() + 60
    while alive := [pid for pid in paused if process_exists(pid)]:
        assert time.monotonic() < deadline, f"trial processes {alive} still run after Ctrl-C"
        time.sleep(0.1)
    assert len(paused) == 2


def process_exists(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True



def test_tpe_on_ray_proposes_and_trains_exactly_as_the_local_loop(cluster, dataset, tmp_path, capsys):
    """TPE's batches run side by side on Ray and are told in trial order, whichever trial ends
    first: --ray --deterministic gives the local loop's trials, hparams and metrics."""
    pytest.importorskip("optuna")
    from test_tpe import TPE, outcome

    args = ["--data", str(dataset), *TPE]
    assert train.main(["--ray", "--logdir", str(tmp_path / "ray"), *args]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("Running ")] == [
        "Running 2 trial(s) on Ray, to epoch 2: each takes 1 CPU(s) and 0 GPU(s)."] * 3
    assert train.main(["--logdir", str(tmp_path / "local"), *args]) == 0
    ray_trials, local_trials = outcome(tmp_path / "ray"), outcome(tmp_path / "local")
    assert sorted(index for _, index, _ in ray_trials.values()) == list(range(6))
    assert ray_trials == local_trials
