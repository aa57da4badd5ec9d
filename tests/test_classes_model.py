"""Any classes and your own model (#29): three class folders from data_split.py to predict.py's
class names, a model file of the user's (a functional one with a branch) that trains, is kept and
loads anywhere, a refused rerun once it is edited, and its mistakes said in one line."""

import csv
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import write_dataset
from test_train import FAST

import data_split
import predict
import train
from hparam_sweep import evaluate, experiment, loop, pipeline, report, trial
from hparam_sweep.common import CLASSES_ENTRY, UsageError

FLOWERS = ("daisy", "roses", "tulips")  # sorted: the order of the model's outputs
ONE = ["--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam", "--grid", "learning_rate=0.01"]
BRANCHED = '''import keras


def build_model(hparams, image_size, num_classes):
    """Two convolution paths side by side, concatenated: no linear stack."""
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    wide = keras.layers.Conv2D(4, 5, padding="same", activation="relu")(x)
    narrow = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Concatenate()([wide, narrow]))
    x = keras.layers.Dense(hparams["num_units"], activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
'''


def plain_keras(script, cwd):
    """Run script in a fresh Python that imports nothing of this project; its stdout."""
    run = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2", "HOME": str(cwd)})
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_three_classes_from_class_folders_to_predicted_names(tmp_path, tensorboard, capsys):
    source = write_dataset(tmp_path / "download", per_class=(10, 0), classes=FLOWERS) / "train"
    data, logdir = tmp_path / "data", tmp_path / "logs"
    assert data_split.main(["--source", str(source), "--dest", str(data)]) == 0
    assert train.main(["--data", str(data), "--logdir", str(logdir), *FAST, *ONE]) == 0
    out = capsys.readouterr().out
    [name] = [p.parent.name for p in logdir.glob(f"*/{trial.TRIAL_FILE}")]
    assert trial.load(logdir / name)["settings"]["classes"] == list(FLOWERS)

    api = tensorboard(logdir)
    [group] = api.wait_for(1)
    assert group["name"] == name and group["sessions"][0]["status"] == "STATUS_SUCCESS"
    api.wait_for_plugins(["pr_curves"])  # the chosen model's PR curve for each class against the rest
    assert sorted(api.get("plugin/pr_curves/tags")[report.CHOSEN_RUN]) == [f"{c}/pr_curves" for c in sorted(FLOWERS)]

    # The test score, with each class's accuracy and the confusion counts, in test_score.json and on the console.
    score = json.loads((logdir / evaluate.SCORE_FILE).read_text())
    counts = np.array(score["confusion"]["counts"])
    assert score["confusion"]["classes"] == list(FLOWERS) and counts.shape == (3, 3) and counts.sum() == score["count"]
    assert [score["per_class"][c]["correct"] for c in FLOWERS] == list(np.diag(counts)) and np.trace(counts) == score["correct"]
    assert all(score["per_class"][c]["count"] == 1 for c in FLOWERS)  # data_split.py's 10% of 10 a class
    [line] = [line for line in out.splitlines() if line.startswith("Test accuracy")]
    assert all(f"{c} {score['per_class'][c]['accuracy']:.3f}" in line for c in FLOWERS) and "taken for another" in line

    # The kept model says what its outputs are; predict.py names them, a line per image or a column per class.
    best = logdir / experiment.BEST_MODEL_FILE
    assert json.loads(zipfile.ZipFile(best).read(CLASSES_ENTRY)) == {"classes": list(FLOWERS)}
    assert predict.main([str(data / "test"), "--logdir", str(logdir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(re.fullmatch(r"(daisy|roses|tulips) [01]\.\d\d  \S+", x) for x in lines), lines
    rows = tmp_path / "rows.csv"
    assert predict.main([str(data / "test"), "--logdir", str(logdir), "--csv", str(rows)]) == 0
    table = list(csv.DictReader(rows.open()))
    assert list(table[0]) == ["path", "label", "p_daisy", "p_roses", "p_tulips"]
    assert all(sum(float(row[f"p_{c}"]) for c in FLOWERS) == pytest.approx(1, abs=1e-5) for row in table)
    assert sum(row["label"] == Path(row["path"]).parent.name for row in table) == score["correct"]


def test_the_classes_must_be_the_same_in_every_split(tmp_path):
    data = write_dataset(tmp_path / "data", per_class=(2, 1), classes=FLOWERS)
    assert pipeline.check_data(data) == FLOWERS
    (data / "validation" / "roses").rename(data / "validation" / "rose")
    with pytest.raises(UsageError, match=r"validation must hold exactly the folders daisy, roses and tulips/ \(found: "
                                         r"daisy, rose and tulips\), the classes of .*train: roses/ missing; rose/ "
                                         r"not in train/"):
        pipeline.check_data(data)


@pytest.fixture(scope="module")
def branched(tmp_path_factory):
    """A 1-trial sweep of BRANCHED (a functional model with two paths) on 3 classes: (data, logdir, model file, argv)."""
    root = tmp_path_factory.mktemp("branched")
    data = write_dataset(root / "data", per_class=(4, 2), classes=FLOWERS)
    model_file = root / "my_model.py"
    model_file.write_text(BRANCHED)
    argv = ["--data", str(data), "--logdir", str(root / "logs"), *FAST, *ONE, "--model-file", str(model_file)]
    assert train.main(argv) == 0
    return data, root / "logs", model_file, argv


def test_a_functional_model_with_a_branch_trains_is_kept_and_loads_with_plain_keras(branched, tmp_path):
    _, logdir, model_file, _ = branched
    [record] = [trial.load(p.parent) for p in logdir.glob(f"*/{trial.TRIAL_FILE}")]
    assert record["status"] == "success" and record["settings"]["model_file"] == str(model_file)
    assert record["settings"]["model_sha256"] and record["settings"]["augment_in_model"] is False
    script = ("import sys, warnings\nwarnings.simplefilter('error')\nimport keras, numpy as np\n"
              f"model = keras.models.load_model({str(logdir / experiment.BEST_MODEL_FILE)!r})\n"
              "p = model.predict(np.zeros((2, 24, 24, 3), np.uint8), verbose=0)\n"
              "print(type(model).__name__, sorted(type(layer).__name__ for layer in model.layers), p.shape, "
              "model.compiled, [m for m in sys.modules if m.startswith(('hparam_sweep', 'model_file'))])\n")
    assert plain_keras(script, tmp_path).splitlines()[-1] == (
        "Functional ['Concatenate', 'Conv2D', 'Conv2D', 'Dense', 'Dense', 'GlobalAveragePooling2D', 'InputLayer', "
        "'Rescaling'] (2, 3) False []")


def test_an_edited_model_file_never_reuses_the_trials_of_the_old_one(branched, monkeypatch, capsys):
    _, logdir, model_file, argv = branched
    capsys.readouterr()
    monkeypatch.setattr(loop, "run_search", lambda *a: pytest.fail("it trained"))
    model_file.write_text(BRANCHED.replace("Conv2D(4, 5", "Conv2D(8, 5"))
    try:
        assert train.main(argv) == train.EXIT_USAGE
    finally:
        model_file.write_text(BRANCHED)
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(r"other settings \(model_sha256 \w{64} -> \w{64}, see .*\)", err) and "--restart" in err
    monkeypatch.undo()
    assert train.main(argv) == 0  # the file as it was: its trial is reused
    assert "Reusing 1 finished trial(s)" in capsys.readouterr().out


MISTAKES = {
    "missing": (None, "cannot read it (No such file or directory)"),
    "syntax": ("def build_model(hparams, image_size, num_classes)\n    pass\n", "fails when run (SyntaxError: "),
    "no build_model": ("import keras\n", "defines no build_model(hparams, image_size, num_classes)"),
    "signature": ("def build_model(hparams, image_size):\n    pass\n", "its build_model(hparams, image_size) cannot be "
                  "called as build_model(hparams, image_size, num_classes)"),
    "raises": ("def build_model(hparams, image_size, num_classes):\n    return hparams['units']\n",
               "its build_model raised KeyError: 'units' (my_model.py, line 2)"),
    "not a model": ("def build_model(hparams, image_size, num_classes):\n    return [num_classes]\n",
                    "its build_model returned list, not a Keras model"),
    "units": (BRANCHED.replace("Dense(num_classes", "Dense(5"), "its model gives outputs of shape (5,) for an image, "
              "but the data has 2 classes (cats and dogs): end it with keras.layers.Dense(num_classes"),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_mistake_in_the_model_file_is_one_line_before_any_training(mistake, dataset, tmp_path, monkeypatch, capsys):
    text, said = MISTAKES[mistake]
    model_file = tmp_path / "my_model.py"
    if text is not None:
        model_file.write_text(text)
    monkeypatch.setattr(pipeline, "load_data", lambda *a: pytest.fail("it decoded the images"))
    monkeypatch.setattr(loop, "run_search", lambda *a: pytest.fail("it trained"))
    logdir = tmp_path / "logs"
    assert train.main(["--data", str(dataset), "--logdir", str(logdir), *FAST, *ONE, "--model-file",
                       str(model_file)]) == train.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.splitlines() == [err.strip()] and err.startswith(f"train.py: error: --model-file {model_file}: "), err
    assert said in err and "Traceback" not in err
    assert not list(logdir.glob(f"*/{trial.TRIAL_FILE}"))


def test_a_model_that_cannot_be_saved_fails_its_trial_not_the_sweep(dataset, tmp_path, monkeypatch, capsys):
    def unsaveable(model):
        raise TypeError("cannot serialize object of type Bad")

    monkeypatch.setattr(trial, "inference_model", unsaveable)
    logdir = tmp_path / "logs"
    two = [a.replace("optimizer=adam", "optimizer=adam,sgd") for a in ONE]
    assert train.main(["--data", str(dataset), "--logdir", str(logdir), *FAST, *two]) == train.EXIT_TRIAL_FAILED
    records = [trial.load(p.parent) for p in logdir.glob(f"*/{trial.TRIAL_FILE}")]
    assert len(records) == 2 and {r["status"] for r in records} == {"failure"}
    assert {r["error"] for r in records} == {
        "TrialFailed: the trained model cannot be saved (TypeError: cannot serialize object of type Bad)"}
    assert not list(logdir.glob(f"*/{trial.MODEL_FILE}")) and "Traceback" not in capsys.readouterr().err


def test_the_kept_model_of_a_functional_graph_drops_only_the_augmentation():
    import keras

    from hparam_sweep.augment import RandomAffine
    from hparam_sweep.model import inference_model

    inputs = keras.Input((16, 16, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(RandomAffine(7)(inputs))
    x = keras.layers.Concatenate()([keras.layers.Conv2D(2, 3)(x), keras.layers.Conv2D(2, 3)(x)])
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x)))
    model.compile("adam", "categorical_crossentropy")
    kept = inference_model(model)
    assert not any(isinstance(layer, RandomAffine) for layer in kept.layers) and not kept.compiled
    assert len(kept.layers) == len(model.layers) and kept.inputs[0].dtype == "uint8"
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    assert np.array_equal(kept.predict(images, verbose=0), model(images, training=False).numpy())
