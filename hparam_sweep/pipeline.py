"""Input pipeline: decode every image once, then feed all trials from memory.

The tutorial's ImageDataGenerator decoded and warped every JPEG again in every epoch of every
trial (36 trials x 5 epochs = 180 decodes per image). Here `load_data` decodes both splits once per
machine with `keras.utils.image_dataset_from_directory` into uint8 arrays (150x150x3 = 67.5 KB an
image: 25,000 images take about 1.7 GB) kept in the decode cache (imagecache.py), and
`train_dataset` / `validation_dataset` serve batches from them, training batches augmented
(augment.py) unless the model augments on the accelerator.
"""

import hashlib
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from hparam_sweep import console, imagecache
from hparam_sweep.augment import augment
from hparam_sweep.common import CLASS_DIRS, IMAGE_SUFFIXES, MANIFEST, SPLITS, UsageError


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
                yield start, to_uint8(x), y.numpy().astype(np.int32)
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


def decode_file(path, image_size):
    """One image file decoded and resized exactly as training decodes it (Keras'
    image_dataset_from_directory: TensorFlow's decode_image, bilinear resize without antialiasing,
    then rounded to uint8 as decoded_batches does): (image_size, image_size, 3) uint8. PIL's resize
    (keras.utils.load_img) antialiases: other pixels than the model was trained on. Raises
    tf.errors.InvalidArgumentError for a file that is not an image TensorFlow can decode."""
    image = tf.io.decode_image(tf.io.read_file(str(path)), channels=3, expand_animations=False)
    return to_uint8(tf.image.resize(image, (image_size, image_size), method="bilinear"))


def to_uint8(resized):
    """Keras' resized float pixels as the uint8 the model takes (NumPy)."""
    return tf.cast(tf.round(resized), tf.uint8).numpy()


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
    name = imagecache.key(fingerprint, image_size, data_dir, {s: ds.file_paths for s, ds in datasets.items()}, decoder)
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
