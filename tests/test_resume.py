"""A grid survives SIGKILL and Ctrl-C, failures stay isolated, reruns reuse only comparable trials."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import fill, snapshot, trial_outcome
from tensorboard.plugins.graph import metadata as graph_metadata
from test_train import CPU

from hparam_sweep import hooks, metrics as M, runlog, trial
import train

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 3
SLOW = ["--image-size", "32", "--batch-size", "8", "--epochs", str(EPOCHS), "--steps-per-epoch", "6", "--quiet", *CPU]
TWO_TRIALS = ["--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam,sgd", "--grid", "learning_rate=0.01"]
NAMES = [trial.trial_name({"num_units": 8, "dropout": 0.1, "optimizer": o, "learning_rate": 0.01}) for o in ("adam", "sgd")]


def start_grid(dataset, logdir, *extra, env=None):
    # PYTHONFAULTHANDLER: a process that hangs shows its threads' stacks when ended_output aborts it.
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--data", str(dataset), "--logdir", str(logdir), *SLOW, *TWO_TRIALS, *extra],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})},
    )


def ended_output(process, timeout=120):
    """The output of a process told to stop; one still running `timeout` s later fails the test with
    its threads' stacks (SIGABRT: Python's fault handler prints them) instead of a bare timeout."""
    try:
        return process.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)
        try:
            stacks = process.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            process.kill()
            stacks = "(no output: still running after SIGABRT)"
        pytest.fail(f"still running {timeout} s after it was told to stop:\n{stacks[-8000:]}")


def wait_for_pauses(process, flag, count=1, timeout=240):
    """Block until `count` processes have paused at TRIAL_PAUSE_AT=...:flag (each made flag.PID);
    return their pids. Fails at once if `process` (the driver) ends first."""
    deadline = time.monotonic() + timeout
    while len(paused := sorted(flag.parent.glob(f"{flag.name}.*"))) < count:
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, f"{len(paused)} of {count} processes paused at {flag}"
        time.sleep(0.05)
    return [int(p.suffix[1:]) for p in paused]


def epochs_logged(run_dir):
    return [int(row["epoch"]) for row in trial.read_history(run_dir / trial.HISTORY_FILE)]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_grid_resumes_where_it_stopped(dataset, tmp_path, tensorboard, capsys, sig):
    logdir = tmp_path / "logs"
    # The trainer pauses right after the second trial's first epoch is logged (the 6th write of
    # the logs: each trial writes them when it starts and after each of its 3 epochs), so the
    # signal lands mid-trial however fast the machine is.
    paused = tmp_path / "paused"
    process = start_grid(dataset, logdir, env={hooks.PAUSE_AT_ENV: f"history:6:{paused}"})
    assert wait_for_pauses(process, paused) == [process.pid]
    assert epochs_logged(logdir / NAMES[1]) == [0]

    # A second process on the same logdir is refused while the first holds it.
    assert train.main(["--data", str(dataset), "--logdir", str(logdir), *SLOW, *TWO_TRIALS]) == 2
    assert f"in use by train.py (pid {process.pid})" in capsys.readouterr().err

    process.send_signal(sig)
    output = ended_output(process)
    if sig == signal.SIGINT:
        assert process.returncode == train.EXIT_INTERRUPTED
        assert "rerun the same command" in output and "Traceback" not in output
        assert json.loads((logdir / NAMES[1] / "trial.json").read_text())["status"] == "interrupted"
    else:
        assert process.returncode == -signal.SIGKILL
    first = snapshot(logdir / NAMES[0])
    assert json.loads((logdir / NAMES[0] / "trial.json").read_text())["status"] == "success"

    # The rerun (same command) is not blocked by the dead process's lock.
    assert train.main(["--data", str(dataset), "--logdir", str(logdir), *SLOW, *TWO_TRIALS]) == 0
    out = capsys.readouterr().out
    assert "Reusing 1 finished trial(s)" in out
    assert snapshot(logdir / NAMES[0]) == first  # the finished trial was not touched

    resumed = json.loads((logdir / NAMES[1] / "trial.json").read_text())
    assert resumed["status"] == "success"
    assert resumed["resumed_from_epoch"] >= 1  # continued, not restarted from epoch 0
    assert resumed["attempts"] == 2
    assert epochs_logged(logdir / NAMES[1]) == list(range(EPOCHS))
    assert not (logdir / NAMES[1] / "backup").exists()

    api = tensorboard(logdir)
    groups = api.wait_for(2)
    assert sorted(g["name"] for g in groups) == sorted(NAMES)
    assert [len(g["sessions"]) for g in groups] == [1, 1]
    assert {g["sessions"][0]["status"] for g in groups} == {"STATUS_SUCCESS"}
    # Each layer's weights in the Distributions and Histograms tabs: one point per epoch, for every
    # trial, the interrupted one too (its epoch in progress was redone, its logged one not repeated).
    api.wait_for_plugins(["histograms", "distributions"])
    weights = sorted(runlog.read_weight_histograms(logdir / NAMES[0]))
    assert len(weights) == 8  # 4 layers' kernels and biases
    expected = {f"{name}/train": {tag: list(range(EPOCHS)) for tag in weights} for name in NAMES}
    assert api.steps("histograms", expected) == expected
    assert api.steps("distributions", expected) == expected


def test_failing_trials_are_recorded_and_the_grid_goes_on(dataset, tmp_path, tensorboard, monkeypatch, capsys, diverging):
    build_model = trial.build_model

    def build_or_fail(values, *args, **kwargs):
        if values["optimizer"] == "rmsprop":
            raise RuntimeError("simulated out of memory")
        return build_model(values, *args, **kwargs)

    monkeypatch.setattr(trial, "build_model", build_or_fail)
    logdir = tmp_path / "logs"
    grid = ["--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=rmsprop,adam,sgd",
            "--grid", "learning_rate=0.01,1e12"]
    fast = ["--image-size", "24", "--batch-size", "8", "--epochs", "2", "--steps-per-epoch", "2", "--quiet"]
    assert train.main(["--data", str(dataset), "--logdir", str(logdir), *fast, *grid]) == train.EXIT_TRIAL_FAILED
    out = capsys.readouterr().out

    records = {p.parent.name: json.loads(p.read_text()) for p in logdir.glob("*/trial.json")}
    assert len(records) == 6
    for record in records.values():
        if record["hparams"]["optimizer"] == "rmsprop":
            assert record["status"] == "failure" and "simulated out of memory" in record["error"]
        elif record["hparams"]["learning_rate"] == diverging:
            assert record["status"] == "failure" and "NaN" in record["error"]
        else:
            assert record["status"] == "success"
    failed = [n for n, r in records.items() if r["status"] == "failure"]
    assert f"{len(failed)} failed" in out and all(n in out for n in failed)

    statuses = {g["name"]: g["sessions"][0]["status"] for g in tensorboard(logdir).wait_for(6)}
    assert {n for n, s in statuses.items() if s == "STATUS_FAILURE"} == set(failed)


ONE_TRIAL = trial.trial_name({"num_units": 8, "dropout": 0.2, "optimizer": "adam", "learning_rate": 0.01})


def one_trial_command(dataset, logdir, seed=42):
    """train.py running ONE_TRIAL: --deterministic (dropout and augmentation on, so every RNG
    counts), backed up after every step."""
    return [sys.executable, str(ROOT / "train.py"), "--data", str(dataset), "--logdir", str(logdir), "--image-size", "24",
            "--batch-size", "8", "--epochs", "3", "--steps-per-epoch", "4", "--quiet", *CPU, "--deterministic",
            "--backup-minutes", "0", "--grid", "num_units=8", "--grid", "dropout=0.2", "--grid", "optimizer=adam",
            "--grid", "learning_rate=0.01", "--seed", str(seed)]


def run_one_trial(dataset, logdir, kill_at=None, seed=42):
    """one_trial_command, in a subprocess: op determinism is process-wide and permanent. With kill_at
    (hooks.point's NAME:N) the process SIGKILLs itself there; returns its exit code."""
    env = {**os.environ, hooks.KILL_AT_ENV: kill_at or ""}
    done = subprocess.run(one_trial_command(dataset, logdir, seed), cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == (-signal.SIGKILL if kill_at else 0), done.stdout + done.stderr
    return done.returncode


def test_a_trial_killed_anywhere_ends_bit_identical_to_an_uninterrupted_one(dataset, tmp_path):
    name = ONE_TRIAL
    run_one_trial(dataset, tmp_path / "straight")
    expected = trial_outcome(tmp_path / "straight" / name)
    assert sorted(expected[2]) == [(g, t) for g in ("train", "validation") for t in (M.EPOCH_ACCURACY, M.EPOCH_LOSS)]
    assert all([step for step, _ in points] == [0, 1, 2] for points in expected[2].values())
    assert len(expected[3]) == 8 and all([step for step, _ in points] == [0, 1, 2] for points in expected[3].values())
    record = json.loads((tmp_path / "straight" / name / trial.TRIAL_FILE).read_text())
    assert record["settings"]["deterministic"] and not record["settings"]["xla"]
    for key in ("python", "tensorflow", "keras", "numpy", "device"):
        assert record["environment"][key]
    assert "--deterministic" in record["command"]

    logdir = tmp_path / "killed"
    # 3 epochs of 4 steps, a backup after each step. Kill before the first step (where the logs are
    # first brought in line with the, still empty, backup); then after the 6th backup (mid-epoch 2);
    # then, resumed there, after epoch 2's backup but before its history.csv row; then, on the next
    # resume, after that row is written but before its TensorBoard points; then, resumed there, after
    # its curves but before its weight histograms (written from the restored model). The last run finishes.
    for kill_at in ("history:1", "backup:6", "backup:2", "history:1", "histograms:1", None):
        run_one_trial(dataset, logdir, kill_at)
    record = json.loads((logdir / name / trial.TRIAL_FILE).read_text())
    assert record["attempts"] == 6 and record["resumed_from_step"] > 0
    assert trial_outcome(logdir / name) == expected  # exact, not approximate
    import tensorflow as tf

    # One Keras graph and one op graph, however often the trial started.
    graphs = runlog.read_tensors(logdir / name, graph_metadata.PLUGIN_NAME_KERAS_MODEL)
    assert [len(points) for points in graphs.values()] == [1]
    events = [e for f in (logdir / name).glob("events.out.tfevents*") for e in tf.compat.v1.train.summary_iterator(str(f))]
    assert len([e for e in events if e.HasField("graph_def")]) == 1

    # The control: the comparison tells runs apart; another seed (other initial weights, data order,
    # augmentation and dropout) ends elsewhere.
    run_one_trial(dataset, tmp_path / "other-seed", seed=7)
    assert trial_outcome(tmp_path / "other-seed" / name)[:2] != expected[:2]
    assert not (logdir / name / trial.BACKUP_DIR).exists()


def test_a_disk_full_at_a_backup_stops_the_run_and_the_rerun_ends_bit_identical(dataset, tmp_path, small_disk):
    """The disk fills up while a trial trains, between its first backup and its second, which does
    not fit: the run stops in one line, exit 3. The trial is not failed and keeps its last complete
    backup, nothing half-written beside it; once there is room, the rerun finishes it bit-identical
    to an uninterrupted run."""
    run_one_trial(dataset, tmp_path / "straight")
    logdir, paused = small_disk / "logs", tmp_path / "paused"
    process = subprocess.Popen(one_trial_command(dataset, logdir), cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONFAULTHANDLER": "1", hooks.PAUSE_AT_ENV: f"backup:1:{paused}"})
    try:
        [pid] = wait_for_pauses(process, paused)
        fill(small_disk)
        Path(f"{paused}.{pid}").unlink()
        output = ended_output(process)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == train.EXIT_STOPPED, output
    [line] = [line for line in output.splitlines() if line.startswith("train.py:")]
    backup = logdir / ONE_TRIAL / trial.BACKUP_DIR
    assert f"stopped: cannot write the backup in {backup} (No space left on device)" in line, output
    assert "Traceback" not in output
    assert trial.load(logdir / ONE_TRIAL)["status"] == "running"
    # The step-1 backup, as it was; not the step-2 one that TensorFlow began (ckpt-2_temp/) nor any temporary file.
    assert sorted(p.name for p in backup.iterdir()) == ["checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index",
                                                        trial.TIME_FILE]
    assert not [p for p in logdir.rglob("*") if ".tmp" in p.name]

    (small_disk / "filler").unlink()
    run_one_trial(dataset, logdir)
    record = trial.load(logdir / ONE_TRIAL)
    assert (record["status"], record["attempts"], record["resumed_from_step"]) == ("success", 2, 1)
    assert trial_outcome(logdir / ONE_TRIAL) == trial_outcome(tmp_path / "straight" / ONE_TRIAL)


def test_a_logdir_written_before_the_package_move_resumes_in_place(tmp_path, capsys):
    """tests/fixtures/logdir-before-package: a logdir written by train.py before the code moved
    into hparam_sweep/, its grid SIGKILLed (TRIAL_KILL_AT=history:5) once the second trial had
    backed up its first epoch. The same command continues it in place, bit-identical to a
    straight run of today's code."""
    fixture = tmp_path / "old"
    shutil.copytree(ROOT / "tests" / "fixtures" / "logdir-before-package", fixture)
    data, logdir = fixture / "data", fixture / "logs"
    # Settings record the data folder's absolute path: where the fixture was made, here where it lies now.
    for path in [logdir / "experiment.json", *logdir.glob(f"*/{trial.TRIAL_FILE}")]:
        path.write_text(path.read_text().replace('"/tmp/fx/data"', json.dumps(str(data))))
    argv = ["--image-size", "16", "--batch-size", "4", "--epochs", "2", "--steps-per-epoch", "2", "--quiet",
            "--grid", "num_units=4", "--grid", "dropout=0.1", "--grid", "optimizer=sgd",
            "--grid", "learning_rate=0.01,0.02", "--seed", "3", "--no-cache", "--deterministic", "--data", str(data)]
    finished, killed = "sgd-lr0.01-u4-d0.1", "sgd-lr0.02-u4-d0.1"
    before = snapshot(logdir / finished)

    assert train.main([*argv, "--logdir", str(logdir)]) == 0
    assert "Reusing 1 finished trial(s)" in capsys.readouterr().out
    assert snapshot(logdir / finished) == before
    resumed = json.loads((logdir / killed / trial.TRIAL_FILE).read_text())
    assert (resumed["status"], resumed["resumed_from_epoch"], resumed["attempts"]) == ("success", 1, 2)

    straight = tmp_path / "straight"
    assert train.main([*argv, "--logdir", str(straight)]) == 0
    # The finished trial has no weight histograms (older releases wrote none); the resumed one has all of
    # them: its first epoch's from the model its backup restored at that epoch's end.
    assert trial_outcome(logdir / finished)[:3] == trial_outcome(straight / finished)[:3]
    assert trial_outcome(logdir / killed) == trial_outcome(straight / killed)
