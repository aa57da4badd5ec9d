"""train.py --ray-address HOST:PORT on a real cluster made with `ray start`, token authentication on,
as docs/ray.md sets it up: two raylets on this machine, each with its own home folder, as if on two
machines.

The driver runs as a subprocess: this pytest process never joins the cluster (tests/test_parallel.py
runs its own Ray in it).
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from test_parallel import TWO, Together  # noqa: E402 - imports Ray
from test_train import FAST, read_results, trial_record  # noqa: E402

from hparam_sweep import hooks  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).parent / "ray")
MARK = "HPARAM_SWEEP_TEST_RAY_CLUSTER"  # in the environment of every process the cluster starts


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(home):
    """This process's environment (XDG_CACHE_HOME a temporary folder: conftest.py) without the
    machine's Ray address and authentication settings, HOME another "machine"'s home folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    home.mkdir(parents=True, exist_ok=True)
    return {**env, "HOME": str(home), "RAY_memory_monitor_refresh_ms": "0"}


class Nodes:
    """`ray start ... --block` processes, each in its own process group; stop() ends them all."""

    def __init__(self, folder):
        self.folder, self.processes = folder, []

    def start(self, name, args, env, ready="Ray runtime started", timeout=120):
        log = self.folder / f"{name}.log"
        with log.open("w") as out:
            # No draining on SIGTERM (up to 30 s by default): stop() ends a node at once.
            env = {**env, MARK: str(self.folder), "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
            process = subprocess.Popen([RAY, "start", *args, "--block"], env=env,
                                       stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.processes.append(process)
        deadline = time.monotonic() + timeout
        while ready not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`ray start` ({name}) did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self):
        for process in reversed(self.processes):  # the second node, then the head
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(self.processes):
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()
        # Ray's worker processes run in sessions of their own: end any the raylets left behind.
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                if f"{MARK}={self.folder}".encode() in environ.read_bytes().split(b"\0"):
                    os.kill(int(environ.parent.name), signal.SIGKILL)
            except (OSError, ValueError):
                pass


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory):
    """A head and a second raylet, one CPU each, token authentication on: the head's token made by
    `ray get-auth-token --generate` in its home folder, copied to the second one's. Yields
    (address, the head's token file)."""
    # Short: Ray's socket paths under --temp-dir must stay under the OS limit of 107 characters.
    folder = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))
    homes = tmp_path_factory.mktemp("homes")
    nodes = Nodes(folder)
    try:
        head_env = {**base_env(homes / "head"), "RAY_AUTH_MODE": "token"}
        subprocess.run([RAY, "get-auth-token", "--generate"], env=head_env, check=True, capture_output=True,
                       timeout=120)
        token = homes / "head" / ".ray" / "auth_token"
        node_env = {**base_env(homes / "node"), "RAY_AUTH_MODE": "token"}
        (homes / "node" / ".ray").mkdir()
        shutil.copy(token, homes / "node" / ".ray" / "auth_token")
        port = free_port()
        common = ["--num-cpus", "1", "--disable-usage-stats"]
        nodes.start("head", ["--head", "--port", str(port), "--include-dashboard=false", "--temp-dir",
                             str(folder / "head"), *common], head_env)
        nodes.start("node", ["--address", f"127.0.0.1:{port}", "--temp-dir", str(folder / "node"), *common], node_env)
        yield f"127.0.0.1:{port}", token
    finally:
        nodes.stop()
        shutil.rmtree(folder, ignore_errors=True)


def run_driver(address, env, dataset, logdir):
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--ray-address", address, "--data", str(dataset), "--logdir",
         str(logdir), *FAST, *TWO],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_a_driver_with_the_heads_token_runs_trials_on_both_nodes(token_cluster, dataset, tmp_path):
    address, token = token_cluster
    # The driver's machine: the token copied anywhere, RAY_AUTH_TOKEN_PATH naming it.
    copy = tmp_path / "token"
    shutil.copy(token, copy)
    env = {**base_env(tmp_path / "home"), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(copy),
           # Each trial waits, once started, until the other one has started too: one on each node.
           hooks.PAUSE_AT_ENV: f"history:1:{tmp_path / 'started'}"}
    # A loaded machine can take minutes to start the second node's trial process and import
    # TensorFlow in it; let go alone sooner, the first trial would free its node for the second.
    together = Together(tmp_path / "started", timeout=400)
    try:
        run = run_driver(address, env, dataset, tmp_path / "logs")
    finally:
        together.close()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    records = [trial_record(tmp_path / "logs", row["run"]) for row in read_results(tmp_path / "logs")]
    assert [r["status"] for r in records] == ["success", "success"]
    assert len({r["worker"]["node_id"] for r in records}) == 2, [r["worker"] for r in records]


@pytest.mark.parametrize("mode", [{}, {"RAY_AUTH_MODE": "token"}], ids=["auth-mode-unset", "auth-mode-token"])
def test_a_driver_without_the_token_is_told_why_in_one_line(token_cluster, dataset, tmp_path, mode):
    address, _ = token_cluster
    # No token in the driver's home folder. Without RAY_AUTH_MODE (a new user), the head refuses it
    # (Ray retries for about 20 s before it gives up; two here); with RAY_AUTH_MODE=token, Ray
    # finds no token to send.
    env = {**base_env(tmp_path / "home"), "RAY_gcs_server_port_wait_time_s": "2", **mode}
    run = run_driver(address, env, dataset, tmp_path / "logs")
    assert run.returncode == 2, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("train.py: error:")]
    assert len(errors) == 1 and run.stderr.rstrip().endswith(errors[0]), run.stderr[-3000:]
    assert f"cannot join the Ray cluster at {address}" in errors[0]
    assert "token authentication" in errors[0] and "RAY_AUTH_MODE=token" in errors[0]
    assert "docs/ray.md" in errors[0] and "ray start --head" not in errors[0]
    assert not (tmp_path / "logs" / "results.csv").exists()
