"""Shared fixtures: tiny generated datasets in the layout data_split.py writes."""

import errno
import hashlib
import json
import math
import os
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pytest
from PIL import Image
from hparam_sweep import metrics as M


@pytest.fixture(autouse=True, scope="session")
def decode_cache_in_tmp(tmp_path_factory):
    """No test writes into the real ~/.cache: the default decode cache ($XDG_CACHE_HOME/...) is a
    temporary folder, for this process and every process it starts (train.py, Ray workers)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield


def write_dataset(root, per_class=(12, 4), size=24, seed=0, classes=("cats", "dogs")):
    """DEST/{train,validation}/<class>/*.png: class i of N bright in the i-th of N vertical bands
    (cats on the left half, dogs on the right), so that a few steps of training already separate them."""
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "validation"), per_class):
        for label, cls in enumerate(classes):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
                pixels[:, label * size // len(classes):(label + 1) * size // len(classes)] += 150
                Image.fromarray(pixels).save(folder / f"{cls.removesuffix('s')}.{i}.png")
    return root


DIVERGING = 1e12  # a learning rate that the `diverging` fixture makes diverge on every machine


@pytest.fixture
def diverging(monkeypatch):
    """Trials with learning rate DIVERGING get an infinite one: the first update makes weights inf or
    NaN (inf * 0), so the next loss is NaN by IEEE arithmetic on any CPU, not by one CPU's rounding
    (a merely huge rate went NaN on one machine and stayed finite on another)."""
    from hparam_sweep import model

    make_optimizer = model.make_optimizer
    monkeypatch.setattr(model, "make_optimizer", lambda name, rate: make_optimizer(name, math.inf if rate == DIVERGING else rate))
    return DIVERGING


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "data")


@pytest.fixture
def small_disk(tmp_path):
    """A file system of its own, a 32 MB tmpfs at tmp_path/disk, for a test to fill up (fill) or
    make read-only (remount) as a real disk gets; skipped where this process may not mount one."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs (a disk to fill up) needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here (a disk to fill up): {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "--lazy", str(disk)], check=True)


def fill(disk):
    """Take every free byte of the file system at disk, in disk/filler: the next write there fails with ENOSPC."""
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(bytes(1 << 16))
        except OSError as e:
            assert e.errno == errno.ENOSPC, e


def remount(disk, options):
    """Remount small_disk's file system with options ("ro", "rw")."""
    subprocess.run(["mount", "-o", f"remount,{options}", str(disk)], check=True)


class TensorBoardAPI:
    """A real `tensorboard` serving LOGDIR on 127.0.0.1, asked through the HParams plugin's HTTP API.

    An HTTP error or a refused connection fails the test at once, with TensorBoard's own output."""

    STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    # urllib's default opener would send requests for 127.0.0.1 to $http_proxy when one is set.
    OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    SERVING = re.compile(r"TensorBoard \S+ at http://127\.0\.0\.1:(\d+)/")

    def __init__(self, logdir, start_timeout=120):
        # --port 0: TensorBoard binds a free port itself and prints it once it listens, so no other
        # process can take the port between choosing and binding it.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
             "--port", "0", "--reload_interval", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.output, lines = [], queue.Queue()
        threading.Thread(target=self._read_output, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.close()
                raise AssertionError(f"TensorBoard did not start in {start_timeout} s:\n{self.log()}") from None
            if line is None:
                raise AssertionError(f"TensorBoard exited with code {self.process.wait()}:\n{self.log()}")
            if match := self.SERVING.search(line):
                self.port = int(match.group(1))
                return

    def _read_output(self, lines):
        """Keep TensorBoard's stderr (so its pipe never fills up) and pass each line on; None at its end."""
        for line in self.process.stderr:
            self.output.append(line)
            lines.put(line)
        lines.put(None)

    def log(self):
        """TensorBoard's output so far: what a failing test shows."""
        return "".join(self.output[-40:])

    def post(self, route, body):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/data/plugin/hparams/{route}",
            data=json.dumps(body).encode(), headers={"Content-Type": "application/json"},
        )
        try:
            with self.OPENER.open(request, timeout=30) as response:
                return json.loads(response.read())
        except OSError as error:  # HTTPError and URLError included
            raise AssertionError(f"TensorBoard {route}: {error}\n{self.log()}") from None

    def steps(self, plugin, expected=None, timeout=60):
        """{run: {tag: [step, ...]}} of every series the histograms or distributions plugin serves; with
        `expected`, asked again (TensorBoard loads the runs one by one, every second) until it says that,
        or `timeout` s have passed."""
        deadline = time.monotonic() + timeout
        while True:
            series = {}
            for run, tags in self.get(f"plugin/{plugin}/tags").items():
                for tag in tags:
                    query = urllib.parse.urlencode({"run": run, "tag": tag})
                    series.setdefault(run, {})[tag] = [p[1] for p in self.get(f"plugin/{plugin}/{plugin}?{query}")]
            if expected is None or series == expected or time.monotonic() > deadline:
                return series
            time.sleep(0.5)

    def get(self, route):
        """GET /data/ROUTE (e.g. plugins_listing, plugin/images/tags) as JSON."""
        try:
            with self.OPENER.open(f"http://127.0.0.1:{self.port}/data/{route}", timeout=30) as response:
                return json.loads(response.read())
        except OSError as error:
            raise AssertionError(f"TensorBoard {route}: {error}\n{self.log()}") from None

    def wait_for_plugins(self, plugins, timeout=120):
        """/data/plugins_listing once every one of `plugins` is active."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            listing = self.get("plugins_listing")
            if all(listing.get(p, {}).get("enabled") for p in plugins):
                return listing
            time.sleep(0.5)  # TensorBoard reloads the logdir every second
        raise AssertionError(f"TensorBoard's active plugins: {[p for p, v in listing.items() if v.get('enabled')]}, "
                             f"expected {plugins} among them")

    def experiment(self):
        return self.post("experiment", {"experimentName": ""})

    def session_groups(self):
        body = {"experimentName": "", "allowedStatuses": self.STATUSES, "startIndex": 0, "sliceSize": 1000}
        return self.post("session_groups", body)["sessionGroups"]

    def wait_for(self, sessions, timeout=120):
        """Session groups once TensorBoard has loaded `sessions` of them, all with an end status."""
        deadline = time.monotonic() + timeout
        groups = []
        while time.monotonic() < deadline:
            groups = self.session_groups()
            if len(groups) >= sessions and all(g["sessions"][0].get("endTimeSecs") for g in groups):
                return groups
            time.sleep(0.5)  # TensorBoard reloads the logdir every second
        raise AssertionError(f"TensorBoard showed {len(groups)} session groups, expected {sessions}")

    def close(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def tensorboard():
    """Start TensorBoard on a logdir: `api = tensorboard(logdir)`; stopped after the test."""
    servers = []

    def start(logdir):
        servers.append(TensorBoardAPI(logdir))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def metric(values, tag, group=""):
    """The value of one metric in a session group's metricValues."""
    found = [m["value"] for m in values if m["name"]["tag"] == tag and m["name"].get("group", "") == group]
    assert len(found) == 1, f"metric {group}/{tag} appears {len(found)} times"
    return found[0]


def snapshot(folder):
    """{relative path: (mtime_ns, sha256)} of every file under folder."""
    return {
        p.relative_to(folder): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def trial_outcome(run_dir):
    """What an exact resume must reproduce: trial.json's metrics (but wall time), history.csv and
    every TensorBoard epoch-curve point and weight-histogram bucket, duplicates included."""
    from hparam_sweep import runlog, trial

    metrics = dict(json.loads((run_dir / trial.TRIAL_FILE).read_text())["metrics"])
    del metrics[M.WALL_TIME]
    histograms = {tag: [(step, buckets.tolist()) for step, buckets in points]
                  for tag, points in runlog.read_weight_histograms(run_dir).items()}
    return metrics, (run_dir / runlog.HISTORY_FILE).read_text(), runlog.read_curves(run_dir), histograms
