"""The model: the tutorial's CNN, and XLA / mixed precision / in-model augmentation taking effect."""

import math

import keras
import numpy as np
import tensorflow as tf

from hparam_sweep import augment
from hparam_sweep.model import build_model


def test_model_is_the_tutorials():
    model = build_model({"num_units": 32, "dropout": 0.2, "optimizer": "rmsprop", "learning_rate": 0.0005}, 24)
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
    assert build_model(values, 24, xla=True).jit_compile is True
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(values, 24)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.layers[1].compute_dtype == "float16"
    assert model.layers[-1].compute_dtype == "float32"
    assert model.layers[1].kernel.dtype == "float32"


def test_augmentation_in_the_model_trains_under_xla_and_only_when_training(tmp_path):
    values = {"num_units": 8, "dropout": 0.1, "optimizer": "adam", "learning_rate": 0.01}
    model = build_model(values, 24, xla=True, augment_seed=7)
    assert model.jit_compile is True
    augmentation = model.layers[0]
    assert isinstance(augmentation, augment.RandomAffine)
    x = tf.constant(np.random.default_rng(1).integers(0, 256, (8, 24, 24, 3)), tf.uint8)
    assert np.array_equal(augmentation(x, training=False).numpy(), tf.cast(x, tf.float32).numpy())
    first, second = augmentation(x, training=True), augmentation(x, training=True)
    assert not np.array_equal(first.numpy(), second.numpy())  # fresh transforms every step
    history = model.fit(x, tf.one_hot(np.arange(8) % 2, 2), epochs=2, verbose=0)
    assert all(math.isfinite(v) for v in history.history["loss"])
    model.save(tmp_path / "m.keras")  # the best trial's model must load again with its layer
    restored = keras.models.load_model(tmp_path / "m.keras")
    assert np.allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
