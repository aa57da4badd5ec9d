"""What the terminal shows: the progress line for long one-off jobs (plain lines into a file or pipe, redrawn on a
terminal), and TensorFlow's noise kept out, also as Ray passes it on from its workers."""

import functools
import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import write_dataset

from hparam_sweep import console, pipeline
import data_split

ROOT = Path(__file__).resolve().parent.parent


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_into_a_file_it_is_one_plain_line_per_update():
    out = io.StringIO()
    with console.Progress("checking", 3, stream=out, delay=0, every=0) as progress:
        for done in (1, 2, 3):
            progress.update(done)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 3
    assert [re.match(r"checking: (\d) of 3 images \(\d+%\), [\d,]+ images/s", line)[1] for line in lines] == ["1", "2", "3"]
    assert "ETA" in lines[0] and "ETA" not in lines[2]


def test_on_a_terminal_it_is_one_line_redrawn_in_place():
    out = Terminal()
    with console.Progress("decoding train/", 1000, stream=out, delay=0, redraw=0) as progress:
        progress.update(5)
        progress.update(1000)
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1  # two updates, the final redraw
    assert "1,000 of 1,000 images (100%)" in text.split("\r")[-1]


def test_a_quick_job_prints_nothing():
    for out in (io.StringIO(), Terminal()):
        with console.Progress("checking", 3, stream=out, delay=3600) as progress:
            progress.update(3)
        assert out.getvalue() == ""


def test_decoding_and_checking_say_how_far_they_are(tmp_path, capsys, monkeypatch):
    data = write_dataset(tmp_path / "data")  # 24 training images
    pipeline.load_split(data / "train", 24, batch_size=8, progress={"delay": 0, "every": 0})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" images")[0] for line in lines] == [f"decoding train/: {n} of 24" for n in (8, 16, 24)]

    monkeypatch.setattr(console, "Progress", functools.partial(console.Progress, delay=0, every=0))
    source = tmp_path / "source"
    for path in (data / "train").rglob("*.png"):
        (source / path.name).parent.mkdir(exist_ok=True)
        (source / path.name).write_bytes(path.read_bytes())
    assert data_split.main(["--source", str(source), "--dest", str(tmp_path / "split"), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "\r" not in out and re.findall(r"^checking: (\d+) of 24 images", out, re.M) == [str(n) for n in range(1, 25)]


# TensorFlow's noise as Ray passes a worker's stderr on to the driver's console (lines seen on a
# --ray run): in colour on a terminal, plain with RAY_COLOR_PREFIX=0, behind the task's name once
# the worker runs a trial, with the machine's address when it is another one.
RAY_PREFIXES = ["\x1b[36m(pid=23559)\x1b[0m ", "(pid=23559) ", "\x1b[36m(adam-lr0.01-u8-d0.1 pid=23560)\x1b[0m ",
                "(run_task pid=23560) ", "(sgd-lr0.01-u16-d0.1 pid=123, ip=10.0.0.2) ",
                "\x1b[95m(sgd-lr0.01-u16-d0.1 pid=123, ip=10.0.0.2)\x1b[0m "]
TF_NOISE_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795837538.350000   23559 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not "
    "be used.",
    "E0000 00:00:1795837543.840226   23560 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call "
    "to cuInit: UNKNOWN ERROR (303)",
    "E0000 00:00:1795826894.834835    2160 node_def_util.cc:682] NodeDef mentions attribute use_unbounded_threadpool "
    "which is not in the op definition: Op<name=MapDataset> This may be expected",
    "I0000 00:00:1796161538.742084    2275 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To turn "
    "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
]
# What must get through: real errors behind the same prefixes, Ray's own messages, the trials'
# output, a noise line Ray deduplicated (its text goes on), and the noise's words not at a line's start.
RAY_KEPT = [
    "(adam-lr0.01-u8-d0.1 pid=23560) E0000 00:00:1795837543.840226   23560 cuda_platform.cc:52] failed call to cuInit: "
    "CUDA_ERROR_NO_DEVICE (100)",
    "\x1b[36m(sgd-lr0.01-u8-d0.1 pid=7, ip=10.0.0.2)\x1b[0m W0000 00:00:1795826892.039200    7 bfc_allocator.cc:1] "
    "Allocator ran out of memory",
    "(adam-lr0.01-u8-d0.1 pid=23560) 2/2 - 1s - 590ms/step - accuracy: 0.3750 - loss: 0.6932 - val_accuracy: 0.5000",
    "\x1b[33m(raylet)\x1b[0m A worker died or was killed while executing a task by an unexpected system error.",
    "(autoscaler +2s) Warning: The following resource request cannot be scheduled right now: {'CPU': 4.0}",
    "(pid=23559) WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\x1b[32m "
    "[repeated 3x across cluster]\x1b[0m",
    "(pid=23559) Traceback (most recent call last):",
    "worker said: (pid=23559) I0000 00:00:1795837538.350000   23559 cudart_stub.cc:31] Could not find cuda drivers on "
    "your machine",
]


def test_tensorflow_noise_from_ray_workers_is_filtered_and_the_rest_kept():
    noise = [prefix + line for prefix in RAY_PREFIXES for line in TF_NOISE_LINES]
    lines = noise[::2] + RAY_KEPT + noise[1::2]
    script = (f"import os\nfrom hparam_sweep import console\nwith console.tensorflow_noise_filtered():\n"
              f"    os.write(2, {chr(10).join(lines).encode()!r} + b'\\n')\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0 and run.stderr.splitlines() == RAY_KEPT


def test_ray_shows_every_worker_line_uncoloured_into_a_file_unless_the_user_says_otherwise(monkeypatch):
    for terminal, user, expected in [
        (True, {}, {"RAY_DEDUP_LOGS": "0"}),
        (False, {}, {"RAY_DEDUP_LOGS": "0", "RAY_COLOR_PREFIX": "0"}),
        (False, {"RAY_DEDUP_LOGS": "1", "RAY_COLOR_PREFIX": "1"}, {"RAY_DEDUP_LOGS": "1", "RAY_COLOR_PREFIX": "1"}),
    ]:
        monkeypatch.setattr(os, "environ", dict(user))
        console.ray_worker_output(terminal)
        assert os.environ == expected


def test_tensorflows_retracing_notice_is_hidden_and_its_other_warnings_kept(monkeypatch):
    logger = logging.getLogger("tensorflow")
    monkeypatch.setattr(logger, "filters", list(logger.filters))
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        console.quiet_tensorflow()
        logger.warning("5 out of the last 7 calls to <function f at 0x1> triggered tf.function retracing. Tracing is "
                       "expensive and ...")
        logger.warning("Compiled the loaded model, but the compiled metrics have yet to be built.")
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == ["Compiled the loaded model, but the compiled metrics have yet to be built."]
