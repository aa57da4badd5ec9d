"""Input pipeline: decode every image once, then feed all trials from memory.

The tutorial's ImageDataGenerator decoded and warped every JPEG again in every epoch of every
trial (36 trials x 5 epochs = 180 decodes per image). Here `load_data` decodes both splits once per
machine with `keras.utils.image_dataset_from_directory` into uint8 arrays (150x150x3 = 67.5 KB an
image: 25,000 images take about 1.7 GB) kept in the decode cache (imagecache.py), and
`train_dataset` / `validation_dataset` serve batches from them.

Augmentation follows the tutorial's ImageDataGenerator settings (rotation up to 45 degrees,
width/height shift 0.15, zoom 0.3, horizontal flip, bilinear sampling, nearest fill) but costs one
`ImageProjectiveTransformV3` call per batch: all four transforms are composed into one affine
matrix per image. Keras' RandomRotation/RandomTranslation/RandomZoom would warp each batch three
times and, inside a model, switch XLA off for the whole model. On a CPU the transform runs in
the tf.data pipeline, in parallel with training and prefetched; on a GPU it runs on the GPU as the
model's first layer (`RandomAffine`), written so that XLA can compile it with the rest of the step.
"""

import hashlib
import math
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

import console
import imagecache
from common import CLASS_DIRS, IMAGE_SUFFIXES, MANIFEST, SPLITS, UsageError

# The tutorial's ImageDataGenerator(rotation_range=45, width_shift_range=.15,
# height_shift_range=.15, zoom_range=0.3, horizontal_flip=True).
ROTATION_DEGREES = 45.0
SHIFT_FRACTION = 0.15
ZOOM_RANGE = 0.3


class ImageSet:
    """One split decoded into memory: uint8 images (N, H, W, 3) and int labels (N,).

    The arrays are held in CPU-side tf.Variables: tf.data map functions capture a variable by
    handle, whereas a captured constant is copied into every dataset's graph (seconds and
    gigabytes per trial at 25,000 images).
    """

    def __init__(self, images, labels):
        with tf.device("/CPU:0"):
            self.images = tf.Variable(images, trainable=False)
            self.labels = tf.Variable(np.asarray(labels, np.int32), trainable=False)

    def __len__(self):
        return int(self.labels.shape[0])


def check_data(data_dir):
    """Refuse, with what to do, a data folder the trainer cannot read."""
    hint = f"run `python data_split.py --source PATH --dest {data_dir}` first, or `python train.py --demo`"
    if not (data_dir / "train").is_dir():
        raise UsageError(f"no training data in {data_dir}/train: {hint}")
    for split in SPLITS:
        split_dir = data_dir / split
        found = sorted(p.name for p in split_dir.iterdir() if p.is_dir()) if split_dir.is_dir() else []
        if found != sorted(CLASS_DIRS):
            raise UsageError(
                f"{split_dir} must hold exactly the folders {' and '.join(CLASS_DIRS)}/ "
                f"(found: {', '.join(found) or 'nothing'}): {hint}"
            )
        for cls in CLASS_DIRS:
            if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in (split_dir / cls).iterdir()):
                raise UsageError(f"{split_dir / cls} holds no images: {hint}")


def data_fingerprint(data_dir):
    """SHA-256 of data_split.py's manifest, or of the file list and sizes when there is none."""
    manifest = data_dir / MANIFEST
    digest = hashlib.sha256()
    if manifest.exists():
        digest.update(manifest.read_bytes())
    else:
        for path in sorted(p for split in SPLITS for p in (data_dir / split).rglob("*") if p.is_file()):
            digest.update(f"{path.relative_to(data_dir).as_posix()}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def image_files(directory, image_size, batch_size=256):
    """Keras' dataset of the images under `directory`/{cats,dogs}, not decoded yet: its
    `file_paths` list them in the order they decode (the count a driver needs, the cache key's files)."""
    return keras.utils.image_dataset_from_directory(
        directory,
        labels="inferred",
        label_mode="int",
        class_names=list(CLASS_DIRS),
        image_size=(image_size, image_size),
        interpolation="bilinear",
        batch_size=batch_size,
        shuffle=False,
        verbose=False,
    )


def decoded_batches(directory, dataset, progress=None):
    """Decode and resize the images of `dataset` (image_files(directory, ...)) batch by batch:
    yields (start, uint8 images, int32 labels), so that the whole set is never held twice; a
    progress line (console.Progress, whose arguments `progress` may change) if it takes long."""
    # The full download takes a minute or more on a CPU: say how far it is.
    with console.Progress(f"decoding {directory.name}/", len(dataset.file_paths), **(progress or {})) as line:
        start = 0
        try:
            for x, y in dataset:
                yield start, tf.cast(tf.round(x), tf.uint8).numpy(), y.numpy().astype(np.int32)
                start += len(y)
                line.update(start)
        except tf.errors.InvalidArgumentError as e:
            raise UsageError(
                f"an image under {directory} cannot be decoded ({e.message.splitlines()[0]}): "
                f"rebuild the folder with data_split.py, which checks every image"
            ) from None


def decode_in_memory(directory, dataset, image_size, progress=None):
    """(images, labels) NumPy arrays of `dataset`'s images, filled batch by batch."""
    n = len(dataset.file_paths)
    images, labels = np.empty((n, image_size, image_size, 3), np.uint8), np.empty(n, np.int32)
    for start, x, y in decoded_batches(directory, dataset, progress):
        images[start:start + len(y)], labels[start:start + len(y)] = x, y
    return images, labels


def decode_to_cache(data_dir, datasets, image_size, folder):
    """Write each split's images and labels into `folder` as .npy files, batch by batch (imagecache.Writer)."""
    for split, dataset in datasets.items():
        n = len(dataset.file_paths)
        labels = np.empty(n, np.int32)
        with imagecache.Writer(folder / f"{split}-images.npy", (n, image_size, image_size, 3), np.uint8) as images:
            for start, x, y in decoded_batches(data_dir / split, dataset):
                images.write(x)
                labels[start:start + len(y)] = y
        with imagecache.Writer(folder / f"{split}-labels.npy", (n,), np.int32) as out:
            out.write(labels)


def image_count(directory):
    """How many images Keras finds under `directory`/{cats,dogs} (nothing is decoded)."""
    return len(image_files(directory, 1).file_paths)


def load_data(data_dir, image_size, cache_dir=None):
    """Both splits as (train, validation) ImageSets that every trial of this process reuses, from
    the decode cache in `cache_dir` (imagecache.py: decoded there first if missing), or decoded
    in memory (cache_dir None, or a cache that cannot be written). Prints one line saying which."""
    start = time.monotonic()
    datasets = {split: image_files(data_dir / split, image_size) for split in SPLITS}
    counts = {split: len(ds.file_paths) for split, ds in datasets.items()}
    arrays, where = load_arrays(data_dir, image_size, cache_dir, datasets, counts)
    sets = tuple(ImageSet(*arrays[split]) for split in SPLITS)  # copied out of the map: see ImageSet
    print(f"Images: {counts['train']} training and {counts['validation']} validation at {image_size}x{image_size}, "
          f"{where} ({time.monotonic() - start:.1f} s).", flush=True)
    return sets


def load_arrays(data_dir, image_size, cache_dir, datasets, counts):
    """({split: (images, labels)}, where they came from in words) for load_data."""
    def in_memory():
        return {split: decode_in_memory(data_dir / split, ds, image_size) for split, ds in datasets.items()}

    if cache_dir is None:
        return in_memory(), "decoded in memory (no cache)"
    fingerprint = data_fingerprint(data_dir)
    decoder = {"tensorflow": tf.__version__, "keras": keras.__version__, "interpolation": "bilinear"}
    name = imagecache.key(fingerprint, image_size, {s: ds.file_paths for s, ds in datasets.items()}, decoder)
    about = {"data": str(data_dir.resolve()), "data_fingerprint": fingerprint, "decoder": decoder}
    try:
        arrays, decoded = imagecache.load(Path(cache_dir), name, counts, image_size,
                                          lambda folder: decode_to_cache(data_dir, datasets, image_size, folder), about)
    except OSError as e:  # read-only, disk full, not a folder: train anyway, from memory
        return in_memory(), f"decoded in memory: the decode cache in {cache_dir} cannot be written ({e.strerror or e})"
    folder = Path(cache_dir) / name
    size = imagecache.size_of(folder)
    size = f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"
    if decoded:
        return arrays, f"decoded into the decode cache {folder} ({size}): later runs on this machine read them from there"
    return arrays, f"read from the decode cache {folder} ({size}), not decoded"


def load_split(directory, image_size, batch_size=256, progress=None):
    """Decode and resize every image under `directory`/{cats,dogs} once, into an ImageSet (in memory, no cache)."""
    return ImageSet(*decode_in_memory(directory, image_files(directory, image_size, batch_size), image_size, progress))


def augment_params(seed, batch, height, width):
    """Per-image affine transforms (batch, 8) for `ImageProjectiveTransformV3`, drawn from the
    tutorial's ranges with a stateless RNG so that a (seed, batch index) pair always gives the
    same transforms, whatever order parallel map calls run in.

    Each matrix maps an output pixel (x, y) to the input pixel it samples, composed as
    centre . rotate . shift . zoom . uncentre . flip, the order ImageDataGenerator used.
    """
    seeds = tf.random.experimental.stateless_split(seed, 6)
    angle = tf.random.stateless_uniform([batch], seeds[0], -1.0, 1.0) * (ROTATION_DEGREES * math.pi / 180)
    tx = tf.random.stateless_uniform([batch], seeds[1], -SHIFT_FRACTION, SHIFT_FRACTION) * width
    ty = tf.random.stateless_uniform([batch], seeds[2], -SHIFT_FRACTION, SHIFT_FRACTION) * height
    zx = tf.random.stateless_uniform([batch], seeds[3], 1 - ZOOM_RANGE, 1 + ZOOM_RANGE)
    zy = tf.random.stateless_uniform([batch], seeds[4], 1 - ZOOM_RANGE, 1 + ZOOM_RANGE)
    flip = tf.random.stateless_uniform([batch], seeds[5]) < 0.5

    cos, sin = tf.cos(angle), tf.sin(angle)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    # A = R @ Z (2x2), then translate so that rotation and zoom act about the centre.
    a0, a1 = cos * zx, -sin * zy
    b0, b1 = sin * zx, cos * zy
    a2 = cx + cos * tx - sin * ty - a0 * cx - a1 * cy
    b2 = cy + sin * tx + cos * ty - b0 * cx - b1 * cy
    # A horizontal flip of the output (x -> width - 1 - x) composed on the right.
    sign = tf.where(flip, -1.0, 1.0)
    a2 = a2 + tf.where(flip, a0 * (width - 1), 0.0)
    b2 = b2 + tf.where(flip, b0 * (width - 1), 0.0)
    a0, b0 = a0 * sign, b0 * sign
    zeros = tf.zeros([batch])
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def augment(images, seed):
    """Warp a uint8 batch (B, H, W, 3) with one random affine transform per image."""
    shape = tf.shape(images)
    transforms = augment_params(seed, shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32))
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(images, tf.float32),
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )
    return tf.cast(tf.clip_by_value(tf.round(warped), 0, 255), tf.uint8)


def warp(images, transforms):
    """Pure-TensorFlow twin of `augment`'s ImageProjectiveTransformV3 call (affine transforms,
    bilinear sampling, nearest fill) for float images (B, H, W, C).

    XLA has no kernel for ImageProjectiveTransformV3, so where the warp runs inside the
    XLA-compiled training step (RandomAffine, on a GPU) it is written with gathers instead.
    """
    shape = tf.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij")
    a0, a1, a2, b0, b1, b2 = (transforms[:, i, None, None] for i in range(6))
    # Nearest fill: a sample point outside the image takes the closest edge pixel.
    x = tf.clip_by_value(a0 * xs + a1 * ys + a2, 0.0, tf.cast(width - 1, tf.float32))
    y = tf.clip_by_value(b0 * xs + b1 * ys + b2, 0.0, tf.cast(height - 1, tf.float32))
    x0, y0 = tf.floor(x), tf.floor(y)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    x1, y1 = tf.minimum(x0 + 1, width - 1), tf.minimum(y0 + 1, height - 1)
    pixels = tf.reshape(images, [batch, height * width, channels])

    def at(row, col):
        return tf.reshape(tf.gather(pixels, tf.reshape(row * width + col, [batch, -1]), batch_dims=1), shape)

    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


@keras.saving.register_keras_serializable(package="hparam_sweep")
class RandomAffine(keras.layers.Layer):
    """The tutorial's augmentation as the model's first layer, for a GPU: one random affine warp
    per image (`augment_params`), XLA-compatible (`warp`), active only in training.

    Outputs float32 pixels in [0, 255]; at inference it only casts.
    """

    def __init__(self, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # warp exact pixel values even under mixed precision
        super().__init__(**kwargs)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        images = tf.cast(images, tf.float32)
        if not training:
            return images
        shape = tf.shape(images)
        size = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        return warp(images, augment_params(self.seed_generator.next(), shape[0], *size))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


def _batches(data, order, batch_size):
    """Batches of (uint8 images, one-hot labels) gathered from `data` in the given index order."""
    return order.batch(batch_size).map(
        lambda idx: (tf.gather(data.images, idx), tf.one_hot(tf.gather(data.labels, idx), len(CLASS_DIRS))),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def _untuned(ds):
    """`ds` with tf.data's autotuning off: its AUTOTUNE values stay at TensorFlow's starting points.

    Autotuning stalls the trainer: an iterator's deletion (model.fit deletes its training iterator
    as it returns) waits for the autotuner's thread to wake from a sleep that grows with the
    iterator's age. Measured here: 3-7 s after a 17 s fit, 44 s after a 100 s one, the whole machine
    idle. Off, fits return at once and train no slower: this pipeline only gathers from memory and
    warps each image once, so there is nothing for the autotuner to win.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def train_dataset(data, batch_size, seed, start_step=0, augmented=True):
    """The endless stream of training batches from batch `start_step` on.

    Batch k is a pure function of (seed, k): it holds stream positions [k * B, (k + 1) * B), where
    position i is image `index_shuffle(i % N)` of pass i // N's own seeded permutation, augmented
    with seed (seed, k). A resumed trial starts the stream at its step and sees exactly the batches
    an uninterrupted one would (a `shuffle(reshuffle_each_iteration=True)` stream would restart).
    """
    n = len(data)

    def image_index(position):
        return tf.random.experimental.index_shuffle(position % n, tf.stack([tf.cast(seed, tf.int64), position // n]), n - 1)

    positions = tf.data.Dataset.range(start_step * batch_size, tf.int64.max)
    ds = _batches(data, positions.map(image_index, num_parallel_calls=tf.data.AUTOTUNE), batch_size)
    if augmented:
        ds = ds.enumerate(start_step).map(
            lambda k, batch: (augment(batch[0], tf.stack([tf.cast(seed, tf.int64), k])), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return _untuned(ds.prefetch(tf.data.AUTOTUNE))


def validation_dataset(data, batch_size):
    """Validation batches in file order, never augmented."""
    return _untuned(_batches(data, tf.data.Dataset.range(len(data)), batch_size).prefetch(tf.data.AUTOTUNE))
