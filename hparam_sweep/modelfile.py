"""The model a trial trains: the package's CNN (hparam_sweep/model.py), or `train.py --model-file
my_model.py`, a file of the user's that defines build_model(hparams, image_size, num_classes)
(the contract: model.py's docstring).

    fingerprint(path)     what a logdir records of a model file: the SHA-256 of its text
    check(path, ...)      the file run, built and trained for one step before the sweep: a mistake
                          in it is one line (UsageError) and exit 2, before any training
    build_model(v, s)     a trial's compiled model, from its hparams and Settings

Why the file's text, and not the built model's config (model.to_json()), is the model's part of the
settings: the text holds everything the file decides, also what a config leaves out (the code in a
custom layer's or a subclassed model's call, the compile the file chooses, its initialisers), and it
needs no hparams to compute (a config differs from trial to trial: units, dropout) nor depends on
how a Keras release writes configs. An edit that changes nothing (a comment) is refused too: the
safe side. What the file imports from elsewhere is not covered: keep the model in the one file.
"""

import hashlib
import importlib.machinery
import importlib.util
import inspect
import sys
import tempfile
import traceback
from pathlib import Path

import keras
import numpy as np

from hparam_sweep import model as cnn
from hparam_sweep.common import joined

SIGNATURE = "build_model(hparams, image_size, num_classes)"
_loaded = {}  # {(path, sha256): build_model}: a file runs once per process and text


class ModelFileError(Exception):
    """A model file that does not keep the contract; the message says how, in one line."""


def fingerprint(path):
    """The SHA-256 of the model file's text (Settings.model_sha256)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def reason(error, path):
    """An exception in a few words, with the line of the model file it came from."""
    lines = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename) == path]
    if isinstance(error, SyntaxError) and error.lineno:
        where = f" ({path.name}, line {error.lineno})"
        text = error.msg
    else:
        where = f" ({path.name}, line {lines[-1].lineno})" if lines else ""
        text = (str(error).strip().splitlines() or [""])[0][:300]
    return f"{type(error).__name__}: {text}{where}" if text else f"{type(error).__name__}{where}"


def load(path, sha256=None):
    """The build_model that the model file at path defines, its module run once per process and
    text; ModelFileError for a file that has none to call. sha256: the text it must still have
    (a trial's Settings.model_sha256): a file edited since the run started fails the trial."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as e:
        raise ModelFileError(f"cannot read it ({e.strerror or e})") from None
    digest = hashlib.sha256(text).hexdigest()
    if sha256 and digest != sha256:
        raise ModelFileError("it changed since the run started: rerun to train the new model (in another --logdir)")
    if (path, digest) in _loaded:
        return _loaded[(path, digest)]
    name = f"model_file_{digest[:16]}"  # any file name, even one that is no module name
    spec = importlib.util.spec_from_loader(name, importlib.machinery.SourceFileLoader(name, str(path)))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as `import` does: a dataclass or a pickle in the file finds its module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - whatever the user's code raises is the user's to fix
        del sys.modules[name]
        raise ModelFileError(f"it fails when run ({reason(e, path)})") from None
    build = getattr(module, "build_model", None)
    if not callable(build):
        raise ModelFileError(f"it defines no {SIGNATURE}")
    try:
        inspect.signature(build).bind(None, None, None)
    except TypeError:
        raise ModelFileError(f"its build_model{inspect.signature(build)} cannot be called as {SIGNATURE}") from None
    except ValueError:  # a builtin without a signature: let the call tell
        pass
    _loaded[(path, digest)] = build
    return build


def compiled(model, values, xla):
    """A model file's model, compiled as the CNN is if it came uncompiled; one it compiled itself
    keeps its compile, but --xla decides XLA as for every model."""
    if not isinstance(model, keras.Model):
        raise ModelFileError(f"its build_model returned {type(model).__name__}, not a Keras model")
    if not model.compiled:
        return cnn.compile_model(model, values, xla)
    model.jit_compile = xla
    return model


def build_model(values, settings):
    """The trial's compiled model: the package's CNN (with settings.augment_in_model, the
    augmentation as its first layer), or settings.model_file's."""
    num_classes = len(settings.classes)
    if not settings.model_file:
        return cnn.build_model(values, settings.image_size, num_classes, xla=settings.xla,
                               augment_seed=settings.seed if settings.augment_in_model else None)
    build = load(settings.model_file, settings.model_sha256)
    return compiled(build(values, settings.image_size, num_classes), values, settings.xla)


def check(path, values, image_size, classes):
    """Run the model file at path, build its model for `values` (a trial's hparams), classify and
    train one step of tiny random images, and save it as a trial keeps it: a file that breaks the
    contract (model.py's docstring) raises ModelFileError saying what to change, before the sweep."""
    path = Path(path)
    build = load(path)
    count, rng = len(classes), np.random.default_rng(0)
    x = rng.integers(0, 256, (count, image_size, image_size, 3), dtype=np.uint8)
    y = np.eye(count, dtype=np.float32)
    try:
        try:
            model = build(values, image_size, count)
        except Exception as e:  # noqa: BLE001 - the user's code
            raise ModelFileError(f"its build_model raised {reason(e, path)}") from None
        model = compiled(model, values, xla=False)
        try:
            p = np.asarray(model.predict(x, verbose=0))
        except Exception as e:  # noqa: BLE001
            raise ModelFileError(f"its model cannot take uint8 images of shape {x.shape} ({reason(e, path)})") from None
        if p.shape != (count, count):
            raise ModelFileError(f"its model gives outputs of shape {p.shape[1:]} for an image, but the data has "
                                 f"{count} classes ({joined(classes)}): end it with "
                                 f"keras.layers.Dense(num_classes, activation=\"softmax\")")
        if not (np.all(p >= 0) and np.allclose(p.sum(axis=1), 1, atol=1e-2)):
            raise ModelFileError("its outputs are not probabilities (an image's sum to 1): end the model with a "
                                 "softmax")
        try:
            history = model.fit(x, y, batch_size=count, epochs=1, validation_data=(x, y), verbose=0).history
        except Exception as e:  # noqa: BLE001
            raise ModelFileError(f"its model does not train on one-hot labels ({reason(e, path)})") from None
        if "val_accuracy" not in history:
            raise ModelFileError("its compiled model reports no accuracy: compile it with metrics=[\"accuracy\"], "
                                 "or return it uncompiled")
        with tempfile.TemporaryDirectory() as folder:
            try:
                cnn.inference_model(model).save(Path(folder) / "check.keras")
            except Exception as e:  # noqa: BLE001
                raise ModelFileError(f"its trained model cannot be saved ({reason(e, path)})") from None
    finally:
        keras.backend.clear_session()
