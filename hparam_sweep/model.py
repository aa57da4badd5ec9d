"""The model: the HParams tutorial's small CNN and the optimizers it is tried with.

It is also the example of a model file of your own (`train.py --model-file my_model.py`), whose
contract is: define `build_model(hparams, image_size, num_classes)` returning a Keras model
(Sequential, functional with branches, subclassed if it saves, a keras.applications backbone
built with weights=None) that takes uint8 images (batch, image_size, image_size, 3) and gives
num_classes probabilities, a softmax, in the sorted order of the class folders. Return it
uncompiled and the trainer compiles it as this CNN is (`compile_model`: the trial's optimizer and
learning_rate, categorical cross-entropy on one-hot labels, accuracy, --xla); or compile it
yourself, with a loss for one-hot labels and the metric "accuracy". A model file's model is
augmented in the input pipeline; the in-model augmentation (--augment-in-model) is this CNN's.
Keep the model in the one file: its text is what a logdir records of it (hparam_sweep/modelfile.py).
"""

import keras
from keras.src.models.functional import Functional  # the class of keras.Model(inputs, outputs): it has no public name

from hparam_sweep import metrics
from hparam_sweep.augment import RandomAffine
from hparam_sweep.common import CLASS_DIRS

OPTIMIZERS = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}


def make_optimizer(name, learning_rate):
    """A Keras optimizer by its hparam name."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](learning_rate=learning_rate)


def build_model(values, image_size, num_classes=len(CLASS_DIRS), xla=False, augment_seed=None):
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
            layers.Dense(num_classes, activation="softmax", dtype="float32"),
        ]
    )
    return compile_model(model, values, xla)


def compile_model(model, values, xla=False):
    """Compile a model (the CNN, or a model file's uncompiled one) for the trial's hparams; returns it."""
    model.compile(
        optimizer=make_optimizer(values["optimizer"], values["learning_rate"]),
        loss="categorical_crossentropy",
        metrics=[metrics.ACCURACY],
        jit_compile=xla,
    )
    return model


def inference_model(model):
    """The trained model as it is used: its layers (the same objects, trained weights and all) but
    the training augmentation, uncompiled (no optimizer, no loss). It loads with plain
    keras.models.load_model, in a Python that imports nothing of this project, without warnings,
    and takes uint8 RGB images of the trained size.

    A Sequential model is re-stacked without RandomAffine; a functional one (branches, several
    paths) is called anew from a uint8 input, RandomAffine replaced by what it does at inference
    (a cast to float32). A subclassed model has no graph to rebuild: it is kept as trained."""
    if isinstance(model, keras.Sequential):
        layers = [layer for layer in model.layers if not isinstance(layer, RandomAffine)]
        return keras.Sequential([keras.Input(model.input_shape[1:], dtype="uint8"), *layers], name=model.name)
    if not isinstance(model, Functional):
        return model
    inputs = keras.tree.map_structure(lambda tensor: keras.Input(tensor.shape[1:], dtype=tensor.dtype), model.input)
    called = keras.models.clone_model(  # clone_model compiles its clone again: only its graph is taken
        model, input_tensors=inputs,
        clone_function=lambda layer: keras.layers.Rescaling(1.0) if isinstance(layer, RandomAffine) else layer)
    return keras.Model(called.inputs, called.outputs, name=model.name)
