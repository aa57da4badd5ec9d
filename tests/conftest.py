"""Shared fixtures: tiny generated datasets in the layout data_split.py writes."""

import hashlib
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import pytest
from PIL import Image


def write_dataset(root, per_class=(12, 4), size=24, seed=0):
    """DEST/{train,validation}/{cats,dogs}/*.png: cats bright on the left half, dogs on the right,
    so that a few steps of training already separate them."""
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "validation"), per_class):
        for label, cls in enumerate(("cats", "dogs")):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
                half = slice(0, size // 2) if label == 0 else slice(size // 2, size)
                pixels[:, half] += 150
                Image.fromarray(pixels).save(folder / f"{cls[:-1]}.{i}.png")
    return root


DIVERGING = 1e12  # a learning rate that the `diverging` fixture makes diverge on every machine


@pytest.fixture
def diverging(monkeypatch):
    """Trials with learning rate DIVERGING get an infinite one: the first update makes weights inf or
    NaN (inf * 0), so the next loss is NaN by IEEE arithmetic on any CPU, not by one CPU's rounding
    (a merely huge rate went NaN on one machine and stayed finite on another)."""
    import model

    make_optimizer = model.make_optimizer
    monkeypatch.setattr(model, "make_optimizer", lambda name, rate: make_optimizer(name, math.inf if rate == DIVERGING else rate))
    return DIVERGING


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path / "data")


class TensorBoardAPI:
    """A real `tensorboard` serving LOGDIR on 127.0.0.1, asked through the HParams plugin's HTTP API."""

    STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]

    def __init__(self, logdir):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
             "--port", str(self.port), "--reload_interval", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def post(self, route, body):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/data/plugin/hparams/{route}",
            data=json.dumps(body).encode(), headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

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
            try:
                groups = self.session_groups()
                if len(groups) >= sessions and all(g["sessions"][0].get("endTimeSecs") for g in groups):
                    return groups
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"TensorBoard showed {len(groups)} session groups, expected {sessions}")

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=10)


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
    every TensorBoard epoch-curve point, duplicates included."""
    import hparams as H
    import trial

    metrics = dict(json.loads((run_dir / trial.TRIAL_FILE).read_text())["metrics"])
    del metrics[H.METRIC_WALL_TIME]
    return metrics, (run_dir / trial.HISTORY_FILE).read_text(), trial.read_curves(run_dir)
