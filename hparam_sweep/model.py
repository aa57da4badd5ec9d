"""The model: the HParams tutorial's small CNN and the optimizers it is tried with.

Edit this file (with hparams.py, the domains) to try another architecture: `build_model` is all
the trainer calls. It takes uint8 images of (image_size, image_size, 3) and returns [P(cat), P(dog)].
"""

import keras

from hparam_sweep import metrics
from hparam_sweep.augment import RandomAffine
from hparam_sweep.common import CLASS_DIRS

OPTIMIZERS = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}


def make_optimizer(name, learning_rate):
    """A Keras optimizer by its hparam name."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](learning_rate=learning_rate)


def build_model(values, image_size, xla=False, augment_seed=None):
    """The tutorial's small CNN, compiled for the trial's hparams. Takes uint8 images.

    With an augment_seed the training augmentation is the model's first layer (for a GPU);
    otherwise the input pipeline augments.
    """
    layers = keras.layers
    augmentation = [] if augment_seed is None else [RandomAffine(augment_seed)]
    model = keras.Sequential(
        [
            keras.Input((image_size, image_size, 3), dtype="uint8"),
            *augmentation,
            layers.Rescaling(1 / 255),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Dropout(values["dropout"]),
            layers.Conv2D(128, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Dropout(values["dropout"]),
            layers.Flatten(),
            layers.Dense(values["num_units"], activation="relu"),
            # float32 output keeps the softmax and the loss exact under mixed precision.
            layers.Dense(len(CLASS_DIRS), activation="softmax", dtype="float32"),
        ]
    )
    model.compile(
        optimizer=make_optimizer(values["optimizer"], values["learning_rate"]),
        loss="categorical_crossentropy",
        metrics=[metrics.ACCURACY],
        jit_compile=xla,
    )
    return model


def inference_model(model):
    """The trained model as it is used: its layers but the training augmentation, uncompiled (no
    optimizer, no loss). It loads with plain keras.models.load_model, in a Python that imports
    nothing of this project, without warnings, and takes uint8 RGB images of the trained size."""
    layers = [layer for layer in model.layers if not isinstance(layer, RandomAffine)]
    return keras.Sequential([keras.Input(model.input_shape[1:], dtype="uint8"), *layers], name=model.name)
