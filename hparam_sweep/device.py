"""The device: the GPUs TensorFlow sees, why it sees none on a machine with an NVIDIA GPU, and
the device flags (XLA, mixed precision, augmentation in the model), on with a GPU and off on a
CPU unless the user set them. train.py and bench/bench.py share the flags from here."""

import argparse
import shutil
from pathlib import Path

FLAGS = {
    "xla": "compile each model with XLA",
    "mixed_precision": "float16 compute with float32 weights",
    "augment_in_model": "augment on the accelerator, as the model's first layer, instead of in the input pipeline",
}
CUDA_FIX = "install TensorFlow's CUDA libraries with pip install -e \".[gpu]\""  # Linux: plain tensorflow has none


def add_flags(parser):
    """--xla, --mixed-precision, --augment-in-model and their --no- forms."""
    for name, text in FLAGS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", action=argparse.BooleanOptionalAction,
                            help=f"{text} (default: on with a GPU, off on CPU)")


def resolve_flags(args, gpus):
    """Device flags the user left unset are on with a GPU and off on CPU."""
    for name in FLAGS:
        if getattr(args, name) is None:
            setattr(args, name, bool(gpus))


def describe(settings):
    """The device flags in effect, for a start-up line."""
    return (f"XLA {'on' if settings.xla else 'off'}, mixed precision {'on' if settings.mixed_precision else 'off'}, "
            f"augmentation {'in the model' if settings.augment_in_model else 'in the input pipeline'}")


def gpu_names():
    """The names of the GPUs TensorFlow sees (empty on a CPU-only machine)."""
    import tensorflow as tf  # here, not at the top: the flags above are read before TensorFlow is imported

    gpus = tf.config.list_physical_devices("GPU")
    return [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]


def named(gpus):
    """Where the trials train: the GPUs' names, or the CPU and why (no GPU, or one TensorFlow cannot use)."""
    if gpus:
        return ", ".join(gpus)
    if nvidia_gpu_present():
        return f"the CPU (this machine has an NVIDIA GPU but TensorFlow sees none: {CUDA_FIX})"
    return "the CPU (TensorFlow sees no GPU)"


def nvidia_gpu_present(dev=Path("/dev")):
    """Whether this machine has an NVIDIA GPU, whatever TensorFlow sees: its driver's nvidia-smi is
    on PATH or its device files exist (no TensorFlow needed)."""
    return shutil.which("nvidia-smi") is not None or any(dev.glob("nvidia[0-9]*"))
