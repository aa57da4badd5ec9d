"""train.py end to end on tiny generated images, checked through TensorBoard's own HParams API."""

import csv
import json
import math

import numpy as np
import pytest
import tensorflow as tf

import hparams as H
import pipeline
import train
from conftest import metric

FAST = ["--image-size", "24", "--batch-size", "8", "--epochs", "2", "--steps-per-epoch", "2", "--quiet"]
SMALL_GRID = ["--grid", "num_units=8,16", "--grid", "dropout=0.1", "--grid", "optimizer=adam,sgd", "--grid", "learning_rate=0.01"]


def read_results(logdir):
    with (logdir / "results.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def trial_record(logdir, name):
    return json.loads((logdir / name / "trial.json").read_text())


def test_grid_shows_up_in_the_hparams_dashboard(dataset, tmp_path, tensorboard, monkeypatch):
    decoded = []
    load_split = pipeline.load_split
    monkeypatch.setattr(pipeline, "load_split", lambda *a, **k: decoded.append(load_split(*a, **k)) or decoded[-1])
    logdir = tmp_path / "logs"
    registered = len(train.gradient_registry())

    assert train.main(["--data", str(dataset), "--logdir", str(logdir), *FAST, *SMALL_GRID]) == 0

    # Trials leave nothing behind in TensorFlow's global gradient registry (it held every
    # trial's traced graphs: memory grew by about 75 MB a trial).
    assert len(train.gradient_registry()) == registered

    # Every image was decoded once for the whole grid, not once per trial.
    assert [len(s) for s in decoded] == [24, 8]

    api = tensorboard(logdir)
    groups = api.wait_for(4)
    experiment = api.experiment()
    domains = {h["name"]: h.get("domainDiscrete") for h in experiment["hparamInfos"]}
    assert domains == {"num_units": [8, 16], "dropout": [0.1], "optimizer": ["adam", "sgd"], "learning_rate": [0.01]}
    metric_names = {(m["name"].get("group", ""), m["name"]["tag"]) for m in experiment["metricInfos"]}
    assert metric_names == {(m.as_proto().name.group, m.as_proto().name.tag) for m in H.METRICS}

    results = {row["run"]: row for row in read_results(logdir)}
    assert len(groups) == 4 == len(results)
    for group in groups:
        assert len(group["sessions"]) == 1
        assert group["sessions"][0]["status"] == "STATUS_SUCCESS"
        name = group["name"]
        record = trial_record(logdir, name)
        accuracy = metric(group["metricValues"], H.METRIC_ACCURACY)
        assert record["status"] == "success" == results[name]["status"]
        assert accuracy == pytest.approx(record["metrics"][H.METRIC_ACCURACY], abs=1e-6)
        assert accuracy == pytest.approx(float(results[name][H.METRIC_ACCURACY]), abs=1e-6)
        # The headline metric is the last epoch's validation accuracy curve point.
        assert accuracy == pytest.approx(metric(group["metricValues"], H.EPOCH_ACCURACY, "validation"), abs=1e-6)
        assert group["hparams"] == {k: pytest.approx(v) if not isinstance(v, str) else v
                                    for k, v in record["hparams"].items()}
        assert record["seed"] == 42 and record["environment"]["tensorflow"] == tf.__version__
        assert record["settings"]["data_fingerprint"] == train.data_fingerprint(dataset)
    ranks = [float(row[H.METRIC_ACCURACY]) for row in read_results(logdir)]
    assert ranks == sorted(ranks, reverse=True)
    assert (logdir / train.BEST_MODEL_FILE).is_file()


def test_nan_trial_is_a_failure_and_the_grid_goes_on(dataset, tmp_path, tensorboard, capsys):
    logdir = tmp_path / "logs"
    grid = ["--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam,sgd", "--grid", "learning_rate=1e12"]
    code = train.main(["--data", str(dataset), "--logdir", str(logdir), *FAST, *grid])
    out = capsys.readouterr().out
    by_name = {r["run"]: r for r in read_results(logdir)}
    sgd = train.trial_name({"num_units": 8, "dropout": 0.1, "optimizer": "sgd", "learning_rate": 1e12})
    assert by_name[sgd]["status"] == "failure" and "NaN" in by_name[sgd]["error"]
    assert code == train.EXIT_TRIAL_FAILED
    assert "failed" in out
    api = tensorboard(logdir)
    statuses = {g["name"]: g["sessions"][0]["status"] for g in api.wait_for(2)}
    assert statuses[sgd] == "STATUS_FAILURE"
    assert len(statuses) == 2  # the trial after the failure ran too
    assert all(trial_record(logdir, name)["status"] in train.FINISHED for name in statuses)


def test_demo_flag_uses_generated_data(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_prepare(dest):
        calls.append(dest)
        from conftest import write_dataset

        return write_dataset(dest)

    monkeypatch.setattr(train.data_split, "prepare_demo", fake_prepare)
    monkeypatch.chdir(tmp_path)
    assert train.main(["--demo", *FAST, "--grid", "optimizer=adam", "--grid", "learning_rate=0.01"]) == 0
    assert calls == [train.DEMO_DATA]
    assert (tmp_path / train.DEMO_LOGDIR / "results.csv").exists()
    assert "tensorboard --logdir logs/demo" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "--epochs must be a positive whole number"),
        (["--grid", "colour=red"], "unknown hparam 'colour'"),
        (["--grid", "num_units=many"], "'many' is not of type int"),
        (["--nonsense"], "unrecognized arguments"),
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


def test_augmentation_ranges_match_the_tutorial():
    n, size = 20000, 100.0
    t = pipeline.augment_params(tf.constant([1, 2], tf.int64), n, size, size).numpy()
    a0, a1, a2, b0, b1, b2 = (t[:, i] for i in range(6))
    flipped = a0 * (b1) - a1 * b0 < 0  # a flip makes the linear part's determinant negative
    assert 0.45 < flipped.mean() < 0.55
    sign = np.where(flipped, -1.0, 1.0)
    angle = np.degrees(np.arctan2(b0 * sign, a0 * sign))
    zx, zy = np.hypot(a0, b0), np.hypot(a1, b1)
    assert -45 <= angle.min() < -44 and 44 < angle.max() <= 45
    assert 0.7 <= zx.min() < 0.71 and 1.29 < zx.max() <= 1.3
    assert 0.7 <= zy.min() < 0.71 and 1.29 < zy.max() <= 1.3
    # Where the image centre is sampled from: centre + R @ shift, so |R^-1 (that - centre)| <= 0.15 * size.
    c = (size - 1) / 2
    src_x = a0 * c + a1 * c + a2 - c
    src_y = b0 * c + b1 * c + b2 - c
    rad = np.radians(angle)
    shift_x = np.cos(rad) * src_x + np.sin(rad) * src_y
    shift_y = -np.sin(rad) * src_x + np.cos(rad) * src_y
    assert np.abs(shift_x).max() <= 0.15 * size + 1e-3 and np.abs(shift_x).max() > 0.14 * size
    assert np.abs(shift_y).max() <= 0.15 * size + 1e-3 and np.abs(shift_y).max() > 0.14 * size


def test_augment_fills_with_nearest_and_keeps_uint8():
    flat = tf.fill([4, 16, 16, 3], tf.constant(77, tf.uint8))
    out = pipeline.augment(flat, tf.constant([0, 0], tf.int64))
    assert out.dtype == tf.uint8 and out.shape == (4, 16, 16, 3)
    assert np.all(out.numpy() == 77)  # nearest fill: no black corners after rotating


def test_validation_is_never_augmented_and_training_is(dataset):
    train_set = pipeline.load_split(dataset / "train", 24)
    val_set = pipeline.load_split(dataset / "validation", 24)
    images = np.concatenate([x.numpy() for x, _ in pipeline.validation_dataset(val_set, 3)])
    labels = np.concatenate([y.numpy() for _, y in pipeline.validation_dataset(val_set, 3)])
    assert np.array_equal(images, val_set.images.numpy())
    assert np.array_equal(labels.argmax(1), val_set.labels.numpy())

    x, y = next(iter(pipeline.train_dataset(train_set, 24, seed=1)))
    plain, _ = next(iter(pipeline.train_dataset(train_set, 24, seed=1, augmented=False)))
    assert not np.array_equal(x.numpy(), plain.numpy())
    # Same seed, same batches: order and augmentation are reproducible.
    again, _ = next(iter(pipeline.train_dataset(train_set, 24, seed=1)))
    assert np.array_equal(x.numpy(), again.numpy())


def test_model_is_the_tutorials():
    model = train.build_model({"num_units": 32, "dropout": 0.2, "optimizer": "rmsprop", "learning_rate": 0.0005}, 24)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Rescaling", "Conv2D", "MaxPooling2D", "Dropout", "Conv2D", "MaxPooling2D", "Dropout",
                     "Flatten", "Dense", "Dense"]
    assert [model.layers[i].filters for i in (1, 4)] == [64, 128]
    assert model.layers[-2].units == 32 and model.layers[-1].units == 2
    assert model.layers[3].rate == 0.2
    assert type(model.optimizer).__name__ == "RMSprop"
    assert math.isclose(float(model.optimizer.learning_rate.numpy()), 0.0005, rel_tol=1e-6)


def test_xla_and_mixed_precision_take_effect_in_the_model():
    """No layer of the model switches XLA off (Keras' random-affine layers would), and mixed
    precision computes in float16 with a float32 softmax."""
    values = {"num_units": 8, "dropout": 0.1, "optimizer": "adam", "learning_rate": 0.001}
    assert train.build_model(values, 24, xla=True).jit_compile is True
    keras = train.keras
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = train.build_model(values, 24)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.layers[1].compute_dtype == "float16"
    assert model.layers[-1].compute_dtype == "float32"
    assert model.layers[1].kernel.dtype == "float32"


def test_mixed_precision_holds_for_every_trial(dataset, tmp_path):
    """clear_session() between trials resets Keras' dtype policy; each trial must set it again."""
    logdir = tmp_path / "logs"
    grid = ["--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam,sgd", "--grid", "learning_rate=0.01"]
    try:
        assert train.main(["--data", str(dataset), "--logdir", str(logdir), *FAST, *grid, "--mixed-precision"]) == 0
    finally:
        train.keras.mixed_precision.set_global_policy("float32")
    policies = [json.loads(p.read_text())["dtype_policy"] for p in logdir.glob("*/trial.json")]
    assert policies == ["mixed_float16", "mixed_float16"]


def test_warp_matches_the_input_pipelines_transform():
    """RandomAffine's XLA-compatible warp samples exactly as ImageProjectiveTransformV3 does."""
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (16, 20, 28, 3)), tf.float32)
    transforms = pipeline.augment_params(tf.constant([3, 4], tf.int64), 16, 20.0, 28.0)
    reference = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=[20, 28], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="NEAREST")
    ours = tf.function(pipeline.warp, jit_compile=True)(images, transforms)
    assert np.abs(ours.numpy() - reference.numpy()).max() < 0.01


def test_augmentation_in_the_model_trains_under_xla_and_only_when_training(tmp_path):
    values = {"num_units": 8, "dropout": 0.1, "optimizer": "adam", "learning_rate": 0.01}
    model = train.build_model(values, 24, xla=True, augment_seed=7)
    assert model.jit_compile is True
    augmentation = model.layers[0]
    assert isinstance(augmentation, pipeline.RandomAffine)
    x = tf.constant(np.random.default_rng(1).integers(0, 256, (8, 24, 24, 3)), tf.uint8)
    assert np.array_equal(augmentation(x, training=False).numpy(), tf.cast(x, tf.float32).numpy())
    first, second = augmentation(x, training=True), augmentation(x, training=True)
    assert not np.array_equal(first.numpy(), second.numpy())  # fresh transforms every step
    history = model.fit(x, tf.one_hot(np.arange(8) % 2, 2), epochs=2, verbose=0)
    assert all(math.isfinite(v) for v in history.history["loss"])
    model.save(tmp_path / "m.keras")  # the best trial's model must load again with its layer
    restored = train.keras.models.load_model(tmp_path / "m.keras")
    assert np.allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_grid_with_augmentation_in_the_model(dataset, tmp_path):
    logdir = tmp_path / "logs"
    grid = ["--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam", "--grid", "learning_rate=0.01"]
    assert train.main(["--data", str(dataset), "--logdir", str(logdir), *FAST, *grid, "--augment-in-model"]) == 0
    (record,) = [json.loads(p.read_text()) for p in logdir.glob("*/trial.json")]
    assert record["status"] == "success" and record["settings"]["augment_in_model"] is True
