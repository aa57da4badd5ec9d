"""train.py end to end on tiny generated images, checked through TensorBoard's own HParams API."""

import csv
import dataclasses
import errno
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import metric, remount, snapshot

from hparam_sweep import device, experiment, grid, metrics as M, pipeline, trial
import hparams
import data_split
import train
from hparam_sweep.common import FINISHED, UsageError

ROOT = Path(__file__).resolve().parent.parent
# The device flags pinned, so that a machine with a GPU tests this same configuration.
CPU = ["--no-xla", "--no-mixed-precision", "--no-augment-in-model"]
FAST = ["--image-size", "24", "--batch-size", "8", "--epochs", "2", "--steps-per-epoch", "2", "--quiet", *CPU]
SMALL_GRID = ["--grid", "num_units=8,16", "--grid", "dropout=0.1", "--grid", "optimizer=adam,sgd", "--grid", "learning_rate=0.01"]


def read_results(logdir):
    with (logdir / "results.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def trial_record(logdir, name):
    return json.loads((logdir / name / "trial.json").read_text())


def test_grid_shows_up_in_the_hparams_dashboard(dataset, tmp_path, tensorboard, monkeypatch, capsys):
    decoded = []
    decoded_batches = pipeline.decoded_batches
    monkeypatch.setattr(pipeline, "decoded_batches",
                        lambda directory, paths, *a: decoded.append(paths) or decoded_batches(directory, paths, *a))
    logdir = tmp_path / "logs"
    registered = len(trial.gradient_registry())

    assert train.main(["--data", str(dataset), "--logdir", str(logdir), *FAST, *SMALL_GRID]) == 0

    # Trials leave nothing behind in TensorFlow's global gradient registry (it held every
    # trial's traced graphs: memory grew by about 75 MB a trial).
    assert len(trial.gradient_registry()) == registered

    # Every image was decoded once for the whole grid, not once per trial.
    assert [len(s) for s in decoded] == [24, 8]

    api = tensorboard(logdir)
    groups = api.wait_for(4)
    shown = api.experiment()
    domains = {h["name"]: h.get("domainDiscrete") for h in shown["hparamInfos"]}
    assert domains == {"num_units": [8, 16], "dropout": [0.1], "optimizer": ["adam", "sgd"], "learning_rate": [0.01]}
    metric_names = {(m["name"].get("group", ""), m["name"]["tag"]) for m in shown["metricInfos"]}
    assert metric_names == {(m.as_proto().name.group, m.as_proto().name.tag) for m in M.METRICS}

    results = {row["run"]: row for row in read_results(logdir)}
    assert len(groups) == 4 == len(results)
    for group in groups:
        assert len(group["sessions"]) == 1
        assert group["sessions"][0]["status"] == "STATUS_SUCCESS"
        name = group["name"]
        record = trial_record(logdir, name)
        accuracy = metric(group["metricValues"], M.ACCURACY)
        assert record["status"] == "success" == results[name]["status"]
        assert accuracy == pytest.approx(record["metrics"][M.ACCURACY], abs=1e-6)
        assert accuracy == pytest.approx(float(results[name][M.ACCURACY]), abs=1e-6)
        # The headline metric is the last epoch's validation accuracy curve point.
        assert accuracy == pytest.approx(metric(group["metricValues"], M.EPOCH_ACCURACY, "validation"), abs=1e-6)
        assert group["hparams"] == {k: pytest.approx(v) if not isinstance(v, str) else v
                                    for k, v in record["hparams"].items()}
        assert record["seed"] == 42 and record["environment"]["tensorflow"] == tf.__version__
        assert record["settings"]["data_fingerprint"] == pipeline.data_fingerprint(dataset)
    ranks = [float(row[M.ACCURACY]) for row in read_results(logdir)]
    assert ranks == sorted(ranks, reverse=True)
    assert "val_accuracy" not in capsys.readouterr().out  # --quiet: no Keras progress lines

    # best_model.keras is rank 1's model: evaluated on the validation images it gives rank 1's
    # final metrics, and as the README says it takes uint8 images and returns [P(cat), P(dog)].
    best = read_results(logdir)[0]
    model = keras.models.load_model(logdir / experiment.BEST_MODEL_FILE)
    # It is an inference model (uncompiled): its loss and accuracy are computed here from its predictions.
    val_set = pipeline.load_split(dataset / "validation", 24)
    probabilities = model.predict(val_set.images.numpy(), verbose=0)
    assert probabilities.shape == (8, 2) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    labels = val_set.labels.numpy()
    accuracy = np.mean(np.argmax(probabilities, axis=1) == labels)
    loss = keras.losses.categorical_crossentropy(np.eye(2)[labels], probabilities).numpy().mean()
    assert accuracy == pytest.approx(float(best[M.ACCURACY]), abs=1e-6)
    assert loss == pytest.approx(float(best[M.VAL_LOSS]), rel=1e-5)


def test_random_trials_are_drawn_inside_their_domains_alike_in_two_logdirs_and_shown_as_declared(
        dataset, tmp_path, tensorboard, capsys):
    """--sampler random --trials 4 --seed 1 twice gives the same trials; the dashboard declares each
    domain as it is (dropout an interval), and --trials 6 later in the same logdir adds 2 trials."""
    def run(logdir, trials):
        argv = ["--data", str(dataset), "--logdir", str(logdir), *FAST, "--grid", "num_units=8,16",
                "--sampler", "random", "--trials", str(trials), "--seed", "1"]
        assert train.main(argv) == 0
        return {name: trial_record(logdir, name) for name in (r["run"] for r in read_results(logdir))}

    first, second = run(tmp_path / "a", 4), run(tmp_path / "b", 4)
    assert len(first) == 4 and {n: r["hparams"] for n, r in first.items()} == {n: r["hparams"] for n, r in second.items()}
    for record in first.values():
        values = record["hparams"]
        assert values["num_units"] in (8, 16) and values["optimizer"] in ("adam", "sgd", "rmsprop")
        assert values["learning_rate"] in (0.001, 0.0005, 0.0001)
        assert 0.1 < values["dropout"] < 0.2  # a RealInterval is sampled inside it, not at its ends
        assert (record["sampler"], record["status"]) == ("random", "success")
        assert record["name"].startswith(f"{record['index']:03d}-")
    assert sorted(r["index"] for r in first.values()) == [0, 1, 2, 3]
    assert (tmp_path / "a" / experiment.BEST_MODEL_FILE).is_file()

    api = tensorboard(tmp_path / "a")
    groups = api.wait_for(4)
    declared = {h["name"]: h.get("domainDiscrete", h.get("domainInterval")) for h in api.experiment()["hparamInfos"]}
    assert declared == {"num_units": [8, 16], "dropout": {"minValue": 0.1, "maxValue": 0.2},
                        "optimizer": ["adam", "rmsprop", "sgd"], "learning_rate": [0.0001, 0.0005, 0.001]}
    assert sorted(g["name"] for g in groups) == sorted(first)
    assert all(len(g["sessions"]) == 1 and g["sessions"][0]["status"] == "STATUS_SUCCESS" for g in groups)

    before = {name: snapshot(tmp_path / "a" / name) for name in first}
    capsys.readouterr()
    more = run(tmp_path / "a", 6)
    assert "Reusing 4 finished trial(s)" in capsys.readouterr().out
    assert len(more) == 6 and set(first) < set(more)
    assert {name: snapshot(tmp_path / "a" / name) for name in first} == before  # reused, not trained again


def test_nan_trial_is_a_failure_and_the_grid_goes_on(dataset, tmp_path, tensorboard, capsys, diverging):
    logdir = tmp_path / "logs"
    grid = ["--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam,sgd", "--grid", "learning_rate=1e12"]
    code = train.main(["--data", str(dataset), "--logdir", str(logdir), *FAST, *grid])
    out = capsys.readouterr().out
    by_name = {r["run"]: r for r in read_results(logdir)}
    sgd = trial.trial_name({"num_units": 8, "dropout": 0.1, "optimizer": "sgd", "learning_rate": 1e12})
    assert by_name[sgd]["status"] == "failure" and "NaN" in by_name[sgd]["error"]
    assert code == train.EXIT_TRIAL_FAILED
    assert "failed" in out
    api = tensorboard(logdir)
    statuses = {g["name"]: g["sessions"][0]["status"] for g in api.wait_for(2)}
    assert statuses[sgd] == "STATUS_FAILURE"
    assert len(statuses) == 2  # the trial after the failure ran too
    assert all(trial_record(logdir, name)["status"] in FINISHED for name in statuses)

    # A rerun does not retry failed trials: they are reused untouched (a new --logdir retries them).
    failed = snapshot(logdir / sgd)
    assert train.main(["--data", str(dataset), "--logdir", str(logdir), *FAST, *grid]) == train.EXIT_TRIAL_FAILED
    assert "Reusing 2 finished trial(s)" in capsys.readouterr().out
    assert snapshot(logdir / sgd) == failed


def test_demo_flag_uses_generated_data(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_prepare(dest):
        calls.append(dest)
        with pytest.raises(UsageError, match="in use"):  # the demo data is written under the logdir's lock
            with experiment.locked(train.DEMO_LOGDIR):
                pass
        from conftest import write_dataset

        return write_dataset(dest)

    monkeypatch.setattr(data_split, "prepare_demo", fake_prepare)
    monkeypatch.chdir(tmp_path)
    loud = [flag for flag in FAST if flag != "--quiet"]
    assert train.main(["--demo", *loud, "--grid", "optimizer=adam", "--grid", "learning_rate=0.01"]) == 0
    assert calls == [train.DEMO_DATA]
    assert (tmp_path / train.DEMO_LOGDIR / "results.csv").exists()
    out = capsys.readouterr().out
    assert "tensorboard --logdir logs/demo" in out
    assert "val_accuracy" in out  # without --quiet, Keras' per-epoch progress


def test_demo_changes_the_defaults_not_what_the_user_set():
    args = train.parse_args(["--demo"])
    assert (args.data, args.logdir, args.image_size, args.epochs) == (
        train.DEMO_DATA, train.DEMO_LOGDIR, train.DEMO_IMAGE_SIZE, train.DEMO_EPOCHS)
    assert args.grid == train.DEMO_GRID
    args = train.parse_args(["--demo", "--epochs", "3", "--image-size", "32", "--grid", "optimizer=sgd"])
    assert (args.epochs, args.image_size, args.grid[-1]) == (3, 32, "optimizer=sgd")
    plain = train.parse_args([])
    assert (plain.data, plain.image_size, plain.epochs, plain.grid) == (
        train.DEFAULT_DATA, train.DEFAULT_IMAGE_SIZE, train.DEFAULT_EPOCHS, [])


def test_device_flags_default_on_with_a_gpu_and_off_on_cpu_but_what_the_user_set_stays():
    for gpus, expected in [(["NVIDIA H100 80GB HBM3"], True), ([], False)]:
        args = train.parse_args(["--no-xla"])
        device.resolve_flags(args, gpus)
        assert (args.xla, args.mixed_precision, args.augment_in_model) == (False, expected, expected)
    args = train.parse_args(["--mixed-precision"])
    device.resolve_flags(args, [])
    assert (args.xla, args.mixed_precision, args.augment_in_model) == (False, True, False)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs: 0 is not a positive whole number"),
        (["--grid", "colour=red"], "unknown hparam 'colour'"),
        (["--grid", "num_units=many"], "'many' is not of type int"),
        (["--nonsense"], "unrecognized arguments"),
        (["--trials", "4"], "--trials goes with --sampler random"),
        (["--sampler", "random"], "--sampler random needs --trials N"),
        (["--sampler", "random", "--trials", "0"], "--trials: 0 is not a positive whole number"),
        (["--early-stopping", "0"], "--early-stopping: 0 is not a positive whole number"),
        (["--objective", "precision"], "--objective precision is not a metric the trials report; choose one of "
                                       "val_accuracy, val_loss, val_auc"),
        (["--objective", "loss"], "--objective loss is measured on the training images, which no trial is ranked on: "
                                  "use --objective val_loss"),
    ],
)
def test_cli_mistakes_exit_2_with_one_line(dataset, tmp_path, capsys, argv, message):
    assert exit_code(["--data", str(dataset), "--logdir", str(tmp_path / "logs"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def exit_code(argv):
    """train.main's exit code, whether it returns it or argparse raises SystemExit."""
    try:
        return train.main(argv)
    except SystemExit as e:
        return e.code


def test_missing_data_names_data_split_and_demo(tmp_path, capsys):
    assert train.main(["--data", str(tmp_path / "nowhere"), "--logdir", str(tmp_path / "logs")]) == 2
    err = capsys.readouterr().err
    assert "data_split.py" in err and "--demo" in err and "Traceback" not in err


def test_wrong_layout_and_empty_class_are_refused(dataset, tmp_path, capsys):
    (dataset / "validation" / "birds").mkdir()
    assert train.main(["--data", str(dataset), "--logdir", str(tmp_path / "logs")]) == 2
    assert "must hold exactly the folders cats and dogs" in capsys.readouterr().err
    (dataset / "validation" / "birds").rmdir()
    for image in (dataset / "train" / "dogs").iterdir():
        image.unlink()
    assert train.main(["--data", str(dataset), "--logdir", str(tmp_path / "logs")]) == 2
    assert "train/dogs holds no images" in capsys.readouterr().err


def test_corrupt_image_is_a_clear_error(dataset, tmp_path, capsys):
    (dataset / "train" / "cats" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert train.main(["--data", str(dataset), "--logdir", str(tmp_path / "logs"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "cannot be decoded" in err and "data_split.py" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- the input pipeline


def test_mixed_precision_holds_for_every_trial(dataset, tmp_path):
    """clear_session() between trials resets Keras' dtype policy; each trial must set it again."""
    logdir = tmp_path / "logs"
    grid = ["--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam,sgd", "--grid", "learning_rate=0.01"]
    try:
        assert train.main(["--data", str(dataset), "--logdir", str(logdir), *FAST, *grid, "--mixed-precision"]) == 0
    finally:
        keras.mixed_precision.set_global_policy("float32")
    policies = [json.loads(p.read_text())["dtype_policy"] for p in logdir.glob("*/trial.json")]
    assert policies == ["mixed_float16", "mixed_float16"]


def test_grid_with_augmentation_in_the_model(dataset, tmp_path):
    logdir = tmp_path / "logs"
    grid = ["--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam", "--grid", "learning_rate=0.01"]
    assert train.main(["--data", str(dataset), "--logdir", str(logdir), *FAST, *grid, "--augment-in-model"]) == 0
    (record,) = [json.loads(p.read_text()) for p in logdir.glob("*/trial.json")]
    assert record["status"] == "success" and record["settings"]["augment_in_model"] is True


@pytest.mark.parametrize("where", ["decoding", "between trials"])
def test_ctrl_c_anywhere_exits_130_with_the_resume_hint(dataset, tmp_path, monkeypatch, capsys, where):
    if where == "decoding":
        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt
        monkeypatch.setattr(pipeline, "load_data", interrupted)
    else:
        run = trial.run
        calls = []

        def run_once(*args, **kwargs):
            if calls:
                raise KeyboardInterrupt  # as if Ctrl-C came just after the first trial ended
            calls.append(args)
            return run(*args, **kwargs)
        monkeypatch.setattr(trial, "run", run_once)
    logdir = tmp_path / "logs"
    assert train.main(["--data", str(dataset), "--logdir", str(logdir), *FAST, *SMALL_GRID]) == train.EXIT_INTERRUPTED
    err = capsys.readouterr().err
    assert "rerun the same command" in err and "Traceback" not in err
    with experiment.locked(logdir):  # and the logdir is free again
        pass


NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795826887.781652    2160 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.",
    "E0000 00:00:1795826892.039200    2160 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
    "Failed call to cuInit: UNKNOWN ERROR (303)",
    "E0000 00:00:1795826894.834835    2160 node_def_util.cc:682] NodeDef mentions attribute use_unbounded_threadpool "
    "which is not in the op definition: Op<name=MapDataset> This may be expected",
    # On CPUs with AVX-512 (Intel Xeon, AMD Zen 4), where TensorFlow turns oneDNN on, once per process:
    "I0000 00:00:1796161538.742084    2275 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders. To turn "
    "them off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
]
KEPT = [
    "E0000 00:00:1795826892.039200    2160 cuda_platform.cc:52] failed call to cuInit: CUDA_ERROR_NO_DEVICE (100)",
    "W0000 00:00:1795826892.039200    2160 bfc_allocator.cc:1] Allocator ran out of memory",
    "a line of our own",
]


@pytest.mark.parametrize("level, filtered", [("2", True), ("1", False)])
def test_tensorflow_noise_is_filtered_even_from_a_process_that_aborts(level, filtered):
    # The noise and the real lines go straight to fd 2, as TensorFlow's C++ writes them; the last
    # line has no newline, and the process aborts inside the block as a failed TF check would.
    script = (f"import os\nfrom hparam_sweep import console\nwith console.tensorflow_noise_filtered():\n"
              f"    os.write(2, {chr(10).join(NOISE + KEPT).encode()!r} + b'\\nlast words')\n    os.abort()\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": level}
    err = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True).stderr
    assert err.splitlines() == ([] if filtered else NOISE) + KEPT + ["last words"]


@pytest.mark.parametrize("verbose", [False, True])
def test_verbose_brings_tensorflow_logging_back(verbose):
    """--verbose: no filter and TF_CPP_MIN_LOG_LEVEL as the user left it (unset: TensorFlow's default)."""
    script = ("import os, sys, train\n"
              "def fake_main(args):\n"
              f"    os.write(2, {chr(10).join(NOISE + KEPT).encode()!r} + b'\\n')\n"
              "    print('level', os.environ.get('TF_CPP_MIN_LOG_LEVEL'))\n"
              "    return 0\n"
              "train._main = fake_main\n"
              "sys.exit(train.main(sys.argv[1:]))\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    run = subprocess.run([sys.executable, "-c", script, *(["--verbose"] if verbose else [])],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout == ("level None\n" if verbose else "level 2\n")
    assert run.stderr.splitlines() == (NOISE if verbose else []) + KEPT


def help_text(script):
    """`python SCRIPT --help`'s output, and which of TensorFlow, Keras and NumPy its main() imported to give it."""
    wrapper = (f"import sys\nsys.argv[0] = {script!r}\nimport {script[:-3]} as m\n"
               "try:\n    m.main(['--help'])\nexcept SystemExit:\n    pass\n"
               "print('IMPORTED', *sorted({'tensorflow', 'keras', 'numpy'} & set(sys.modules)))\n")
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    run = subprocess.run([sys.executable, "-c", wrapper], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    text, _, imported = run.stdout.rpartition("IMPORTED")
    return text, imported.split()


@pytest.mark.parametrize("script", ["train.py", "data_split.py", "predict.py"])
def test_help_is_instant_and_shows_each_default_once(script):
    text, imported = help_text(script)
    assert "--help" in text and imported == []
    # One entry per flag: its first line starts with two spaces and a dash; help text lines follow.
    flags = [" ".join(f.split()) for f in re.split(r"\n(?=  -)", text.rpartition("\noptions:\n")[2]) if f.strip()]
    assert len(flags) > 5
    for flag in flags:
        assert flag.count("(default:") <= 1, flag
        assert not re.search(r"\(default: (None|False|\[\])\)", flag), flag
    shown = {f.split()[0].rstrip(","): f for f in flags}
    if script == "train.py":
        for name, default in [("--batch-size", 32), ("--epochs", 5), ("--image-size", 150), ("--seed", 42),
                              ("--backup-minutes", 5.0), ("--search", "grid"), ("--min-epochs", 2), ("--halving-rate", 3)]:
            assert f"(default: {default}" in shown[name]
        assert "(default" not in shown["--verbose"] and "(default" not in shown["--grid"]


def test_help_names_every_objective():
    text, _ = help_text("train.py")
    assert all(name in text for name in M.OBJECTIVES) and "(default: val_accuracy)" in " ".join(text.split())


def test_first_run_prints_no_tensorflow_noise(dataset, tmp_path):
    argv = ["--data", str(dataset), "--logdir", str(tmp_path / "logs"), *FAST, "--epochs", "1", "--steps-per-epoch", "1",
            "--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam", "--grid", "learning_rate=0.01"]
    run = subprocess.run([sys.executable, str(ROOT / "train.py"), *argv], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "Training on " in run.stdout and "tensorboard --logdir" in run.stdout
    assert run.stderr == ""  # whatever this CPU makes TensorFlow print at start-up


def test_progress_into_a_file_is_one_plain_line_per_epoch(dataset, tmp_path, capsys):
    argv = ["--data", str(dataset), "--logdir", str(tmp_path / "logs"), *FAST,
            "--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam", "--grid", "learning_rate=0.01"]
    assert train.main([a for a in argv if a != "--quiet"]) == 0  # capsys: stdout is not a terminal
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\b" not in out
    assert [line.startswith("2/2 - ") for line in out.splitlines() if "val_accuracy" in line] == [True, True]


def test_best_model_is_rank_one_even_when_accuracies_tie(dataset, tmp_path, monkeypatch):
    """Equal accuracies: results.csv ranks the lower validation loss first, and best_model.keras follows it."""
    val_loss = {"adam": 0.6, "sgd": 0.4, "rmsprop": 0.7}

    def fake_run(values, settings, data, run_dir, epochs, *rest):
        metrics = {M.ACCURACY: 0.5, M.BEST_ACCURACY: 0.5, M.VAL_LOSS: val_loss[values["optimizer"]],
                   M.WALL_TIME: 1.0, M.EPOCHS: epochs}
        run_dir.mkdir(parents=True)
        (run_dir / trial.MODEL_FILE).write_text(run_dir.name)
        return {"name": run_dir.name, "hparams": values, "status": "success", "metrics": metrics, "epochs": epochs,
                "settings": dataclasses.asdict(settings), "finished": "now"}

    monkeypatch.setattr(trial, "run", fake_run)
    logdir = tmp_path / "logs"
    grid = ["--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam,sgd,rmsprop", "--grid", "learning_rate=0.01"]
    assert train.main(["--data", str(dataset), "--logdir", str(logdir), *FAST, *grid]) == 0
    best = read_results(logdir)[0]
    assert best["optimizer"] == "sgd"
    assert (logdir / experiment.BEST_MODEL_FILE).read_text() == best["run"]


def check_a_fault_outside_the_trial_stops_the_run_and_fails_no_trial(argv, logdir, capsys):
    """The trained model cannot be saved (here a folder in the way, as a full disk or a refused
    write would refuse it): in the trial's process, then best_model.keras in the loop's. Each stops
    the run in one line, exit 3; the trained trial is never failed, keeps its training state until
    it is finished, and the reruns finish it without training it again. argv runs one trial."""
    [values] = grid.expand_grid(grid.override(hparams.HPARAMS, [a for a in argv if "=" in a]))
    run_dir = logdir / trial.trial_name(values)
    for blocked, said in [(run_dir / trial.MODEL_FILE, "cannot keep the trained model in"),
                          (logdir / experiment.BEST_MODEL_FILE, "cannot keep the best model in")]:
        blocked.mkdir(parents=True)
        assert train.main(argv) == train.EXIT_STOPPED
        err = capsys.readouterr().err
        [line] = [line for line in err.splitlines() if line.startswith("train.py:")]  # Ray workers may speak too
        assert f"{said} {blocked}" in line and "rerun the same command" in line and "Traceback" not in err
        blocked.rmdir()
        if blocked.name == trial.MODEL_FILE:
            assert trial.load(run_dir)["status"] == "running" and (run_dir / trial.BACKUP_DIR).is_dir()
    record = trial.load(run_dir)
    assert record["status"] == "success" and record["resumed_from_epoch"] == record["epochs"]  # nothing retrained
    assert train.main(argv) == 0
    assert (logdir / experiment.BEST_MODEL_FILE).read_bytes() == (run_dir / trial.MODEL_FILE).read_bytes()


ONE_TRIAL = ["--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam", "--grid", "learning_rate=0.01"]


def test_a_fault_outside_the_trial_stops_the_run_and_fails_no_trial(dataset, tmp_path, capsys):
    logdir = tmp_path / "logs"
    argv = ["--data", str(dataset), "--logdir", str(logdir), *FAST, *ONE_TRIAL]
    check_a_fault_outside_the_trial_stops_the_run_and_fails_no_trial(argv, logdir, capsys)


NO_SPACE = os.strerror(errno.ENOSPC)


def no_space_at(monkeypatch, how, target, nth):
    """Make the nth write of target fail as on a full disk: a file renamed into place ("file") with
    OSError ENOSPC; TensorFlow's own writes, an event folder's writer ("events") or a backup
    ("backup", a ckpt-N_temp folder begun, as TensorFlow leaves one), with the
    ResourceExhaustedError "PATH; No space left on device" that TensorFlow raises."""
    count = 0

    def now(path):
        nonlocal count
        count += Path(path) == target
        return Path(path) == target and count == nth

    no_space = tf.errors.ResourceExhaustedError(None, None, f"{target}/a-file; {NO_SPACE} [Op:Write]")
    if how == "file":
        replace = os.replace

        def replace_or_fail(src, dst, *args, **kwargs):
            if now(dst):
                raise OSError(errno.ENOSPC, NO_SPACE)
            return replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", replace_or_fail)
    elif how == "events":
        create = tf.summary.create_file_writer

        def create_or_fail(logdir, *args, **kwargs):
            if now(logdir):
                raise no_space
            return create(logdir, *args, **kwargs)

        monkeypatch.setattr(tf.summary, "create_file_writer", create_or_fail)
    else:
        save = tf.train.CheckpointManager.save

        def save_or_fail(manager, checkpoint_number=None, **kwargs):
            if now(manager.directory):
                (target / f"ckpt-{checkpoint_number}_temp").mkdir()
                raise no_space
            return save(manager, checkpoint_number, **kwargs)

        monkeypatch.setattr(tf.train.CheckpointManager, "save", save_or_fail)


# Each write into the logdir of a one-trial run: (how it fails (no_space_at), its path in (logdir,
# run folder), which of its writes fails, the message's start, whether the trial has a backup then).
# Epochs 2: backups and logs at each epoch end; results.csv is written before and after the trial.
WRITES = {
    "hparams_config": ("events", lambda logdir, run: logdir, 1, "cannot write the hparams_config in {}", False),
    "experiment.json": ("file", lambda logdir, run: logdir / experiment.EXPERIMENT_FILE, 1, "cannot write {}", False),
    "first trial.json": ("file", lambda logdir, run: run / trial.TRIAL_FILE, 1, "cannot write {}", False),
    "session start": ("events", lambda logdir, run: run, 1, "cannot write the HParams session in {}", False),
    "history.csv": ("file", lambda logdir, run: run / trial.HISTORY_FILE, 1, "cannot write {}", True),
    "curves": ("events", lambda logdir, run: run / "train", 1, "cannot write the curves in {}", True),
    "second backup": ("backup", lambda logdir, run: run / trial.BACKUP_DIR, 2, "cannot write the backup in {}", True),
    "graph": ("events", lambda logdir, run: run, 2, "cannot write the model's graph in {}", False),
    "op graph": ("events", lambda logdir, run: run, 3, "cannot write the op graph in {}", False),
    "session end": ("events", lambda logdir, run: run, 4, "cannot write the HParams session in {}", True),
    "results.csv after the trial": ("file", lambda logdir, run: logdir / experiment.RESULTS_FILE, 2, "cannot write {}",
                                    False),
}


@pytest.mark.parametrize("write", WRITES)
def test_a_full_disk_at_any_write_into_the_logdir_stops_the_run_and_fails_no_trial(dataset, tmp_path, monkeypatch,
                                                                                   capsys, write):
    """Stops in one line, exit 3; the trial is not failed (it stays unfinished with its training
    state, or, finished before, stays so), no temporary file is left, and the rerun finishes it."""
    how, path, nth, said, backed_up = WRITES[write]
    logdir = tmp_path / "logs"
    [values] = grid.expand_grid(grid.override(hparams.HPARAMS, [a for a in ONE_TRIAL if "=" in a]))
    run_dir = logdir / trial.trial_name(values)
    argv = ["--data", str(dataset), "--logdir", str(logdir), *FAST, *ONE_TRIAL]
    with monkeypatch.context() as patch:
        no_space_at(patch, how, path(logdir, run_dir), nth)
        assert train.main(argv) == train.EXIT_STOPPED
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if line.startswith("train.py:")]
    assert f"stopped: {said.format(path(logdir, run_dir))} ({NO_SPACE})" in line and "Traceback" not in err
    record = trial.load(run_dir) or {"status": None}
    assert record["status"] in (None, "running", "success")
    assert (run_dir / trial.BACKUP_DIR).is_dir() == backed_up
    assert not [p for p in logdir.rglob("*") if ".tmp" in p.name or p.name.endswith("_temp")]
    assert train.main(argv) == 0
    assert trial.load(run_dir)["status"] == "success"


def test_every_file_renamed_into_the_logdir_is_fsynced_before_and_its_folder_after(dataset, tmp_path, monkeypatch):
    """A power cut after a rename never leaves an empty or half file under a record's, a model's or
    results.csv's name (as some file systems do for a file renamed before its data reached the disk)."""
    logdir, calls = tmp_path / "logs", []
    fsync, replace = os.fsync, os.replace

    def recorded_fsync(fd):
        calls.append(("fsync", Path(os.readlink(f"/proc/self/fd/{fd}"))))
        fsync(fd)

    def recorded_replace(src, dst, *args, **kwargs):
        calls.append(("replace", Path(src).resolve(), Path(dst).resolve()))
        replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(os, "replace", recorded_replace)
    assert train.main(["--data", str(dataset), "--logdir", str(logdir), *FAST, *ONE_TRIAL]) == 0
    renamed = [(i, call[1], call[2]) for i, call in enumerate(calls)
               if call[0] == "replace" and logdir.resolve() in call[2].parents]
    assert {dst.name for _, _, dst in renamed} == {
        experiment.EXPERIMENT_FILE, experiment.RESULTS_FILE, experiment.BEST_MODEL_FILE, experiment.BEST_FILE,
        trial.TRIAL_FILE, trial.HISTORY_FILE, trial.MODEL_FILE, trial.TIME_FILE}
    for i, src, dst in renamed:
        assert calls[i - 1] == ("fsync", src) and calls[i + 1] == ("fsync", dst.parent), dst


def test_a_read_only_logdir_stops_the_run_in_one_line(dataset, small_disk, capsys):
    """A logdir on a file system mounted read-only: at its first record; where its lock would go, too: at the lock."""
    remount(small_disk, "ro")
    for logdir, said in [(small_disk, f"cannot write the hparams_config in {small_disk}"),
                         (small_disk / "logs", f"cannot lock {small_disk / 'logs'}")]:
        assert train.main(["--data", str(dataset), "--logdir", str(logdir), *FAST, *ONE_TRIAL]) == train.EXIT_STOPPED
        err = capsys.readouterr().err
        [line] = [line for line in err.splitlines() if line.startswith("train.py:")]
        assert f"stopped: {said} (Read-only file system)" in line and "Traceback" not in err


def test_native_windows_is_refused_in_one_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "platform", "win32")
    assert train.main(["--demo"]) == train.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "WSL2" in err


def test_an_nvidia_gpu_that_tensorflow_cannot_use_is_named_with_the_fix(dataset, tmp_path, monkeypatch, capsys):
    """A machine with an NVIDIA GPU (its nvidia-smi, faked on PATH) where TensorFlow sees none: the
    start-up line says so and how to install TensorFlow's CUDA libraries."""
    bin_dir, dev = tmp_path / "bin", tmp_path / "dev"
    bin_dir.mkdir()
    dev.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 'NVIDIA-SMI 580.65'\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setattr(device, "gpu_names", lambda: [])  # TensorFlow sees none, whatever this machine has
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    argv = ["--data", str(dataset), "--logdir", str(tmp_path / "logs"), *FAST, "--epochs", "1", "--steps-per-epoch", "1",
            "--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam", "--grid", "learning_rate=0.01"]
    assert train.main(argv) == 0
    assert ("Training on the CPU (this machine has an NVIDIA GPU but TensorFlow sees none: install TensorFlow's "
            'CUDA libraries with pip install -e ".[gpu]")') in capsys.readouterr().out

    # What is looked for: nvidia-smi on PATH, or the driver's device files.
    assert device.nvidia_gpu_present(dev)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert not device.nvidia_gpu_present(dev)
    (dev / "nvidia0").touch()
    assert device.nvidia_gpu_present(dev)

