"""From the sweep to a usable model: the test split scored once, best_model.keras as an inference
model that loads anywhere, predict.py decoding as training did, the SavedModel export."""

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_dataset
from test_train import FAST

import predict
import train
from hparam_sweep import console, evaluate, experiment, images, pipeline

ROOT = Path(__file__).resolve().parent.parent
ONE = ["--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam", "--grid", "learning_rate=0.01"]
TWO = ["--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam,sgd", "--grid", "learning_rate=0.01"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A 2-trial grid on tiny data with a test split (its own images); returns (data, logdir, output)."""
    root = tmp_path_factory.mktemp("swept")
    data = write_dataset(root / "data")
    held_out = write_dataset(root / "held-out", per_class=(1, 7), seed=5)
    shutil.move(held_out / "validation", data / "test")
    logdir = root / "logs"
    argv = ["--data", str(data), "--logdir", str(logdir), *FAST, *TWO]
    with pytest.MonkeyPatch.context() as patch:
        output = []
        patch.setattr(evaluate, "describe", lambda score, describe=evaluate.describe: output.append(describe(score))
                      or output[-1])
        assert train.main(argv) == 0
    return data, logdir, argv, output


def test_the_chosen_model_is_scored_once_on_the_test_split_and_nothing_else_sees_it(swept, monkeypatch, capsys):
    data, logdir, argv, output = swept
    score = json.loads((logdir / evaluate.SCORE_FILE).read_text())
    rank1 = next(csv.DictReader((logdir / experiment.RESULTS_FILE).open()))
    assert score["trial"] == rank1["run"] == json.loads((logdir / experiment.BEST_FILE).read_text())["name"]
    assert score["count"] == 14 and score["test_accuracy"] == score["correct"] / 14
    low, high = score["interval_95"]
    assert low <= score["test_accuracy"] <= high and "quote" in score
    assert len(output) == 1 and "Quote this one" in output[0]
    # No trial and no ranking sees it: no test metric in results.csv, trial.json or the dashboard config.
    assert "test" not in rank1 and not any("test" in k for k in json.loads(
        (logdir / rank1["run"] / "trial.json").read_text())["metrics"])
    # A rerun that changes nothing prints the same figure and does not score again.
    monkeypatch.setattr(evaluate, "probabilities_on", lambda *a: pytest.fail("scored again"))
    assert train.main(argv) == 0
    assert output[0] in capsys.readouterr().out


def test_wilson_interval():
    assert evaluate.wilson_interval(0, 0) == (0.0, 1.0)
    low, high = evaluate.wilson_interval(81, 100)  # by hand: 0.7985 -+ 0.0763
    assert (round(low, 4), round(high, 4)) == (0.7222, 0.8749)
    low, high = evaluate.wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and 0.69 < low < 0.73


def test_predict_decodes_exactly_as_training_did(tmp_path):
    data = write_dataset(tmp_path / "data", size=37)  # resized to 24: the resize matters
    folder = data / "train"
    decoded = pipeline.load_split(folder, 24)
    files, _ = pipeline.split_files(folder)
    for path, image in zip(files, decoded.images.numpy()):
        assert np.array_equal(images.load(path, 24), image), path


def test_predict_classifies_a_folder_skips_what_is_not_an_image_and_matches_the_test_score(swept, tmp_path, capsys):
    data, logdir, _, _ = swept
    photos = tmp_path / "photos"
    shutil.copytree(data / "test", photos / "test")
    (photos / "notes.txt").write_text("not an image")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 then nothing")
    assert predict.main([str(photos), "--logdir", str(logdir)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 14 and all(re.fullmatch(r"(cat|dog) [01]\.\d\d  \S+", line) for line in lines), lines
    assert f"skipped {photos / 'notes.txt'}: not an image file (.txt)" in err
    assert f"skipped {photos / 'broken.jpg'}: corrupt image: " in err and "Traceback" not in err

    # Its accuracy on the test folder is the reported test score, to the image.
    rows = tmp_path / "rows.csv"
    assert predict.main([str(data / "test"), "--logdir", str(logdir), "--csv", str(rows)]) == 0
    table = list(csv.DictReader(rows.open()))
    correct = sum(row["label"] + "s" == Path(row["path"]).parent.name for row in table)
    assert correct == json.loads((logdir / evaluate.SCORE_FILE).read_text())["correct"] and len(table) == 14


def test_predict_with_nothing_to_classify_exits_1_and_without_a_model_2(swept, tmp_path, capsys):
    _, logdir, _, _ = swept
    (tmp_path / "junk.txt").write_text("no")
    assert predict.main([str(tmp_path), "--logdir", str(logdir)]) == 1
    assert predict.main([str(tmp_path), "--logdir", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert "no model at" in err and "Traceback" not in err


def test_best_model_loads_in_a_fresh_python_without_this_project_or_warnings(dataset, tmp_path):
    """Trained with mixed precision and the augmentation in the model, as on a GPU."""
    logdir = tmp_path / "logs"
    argv = ["--data", str(dataset), "--logdir", str(logdir), *FAST, *ONE, "--mixed-precision", "--augment-in-model"]
    assert train.main([a for a in argv if a not in ("--no-mixed-precision", "--no-augment-in-model")]) == 0
    script = ("import sys, warnings\nwarnings.simplefilter('error')\nimport keras, numpy as np\n"
              f"model = keras.models.load_model({str(logdir / experiment.BEST_MODEL_FILE)!r})\n"
              "p = model.predict(np.zeros((2, 24, 24, 3), np.uint8), verbose=0)\n"
              "print(model.inputs[0].dtype, p.shape, [m for m in sys.modules if m.startswith('hparam_sweep')])\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2", "HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[-2] == "uint8 (2, 2) []"
    # Nothing from Keras or Python (its warnings are errors here); TensorFlow's C++ start-up lines aside.
    assert [line for line in run.stderr.splitlines()
            if not re.match(console.TF_NOISE, line) and not re.match(r"[IWE]\d{4} ", line)] == []


def test_the_export_serves_what_the_model_predicts(swept, tmp_path):
    import keras
    import tensorflow as tf

    _, logdir, _, _ = swept
    assert predict.main(["--export", str(tmp_path / "served"), "--logdir", str(logdir)]) == 0
    served = tf.saved_model.load(str(tmp_path / "served"))
    images = np.random.default_rng(0).integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    expected = keras.models.load_model(logdir / experiment.BEST_MODEL_FILE).predict(images, verbose=0)
    assert np.allclose(served.serve(tf.constant(images)).numpy(), expected, atol=1e-6)
