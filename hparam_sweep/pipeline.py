"""Input pipeline: decode every image once, then feed all trials from memory.

The tutorial's ImageDataGenerator decoded and warped every JPEG again in every epoch of every
trial (36 trials x 5 epochs = 180 decodes per image). Here `load_data` decodes both splits once per
machine, with images.py (the decode predict.py and the test score use too), into uint8 arrays
(150x150x3 = 67.5 KB an image: 25,000 images take about 1.7 GB) kept in the decode cache
(imagecache.py), and
`train_dataset` / `validation_dataset` serve batches from them, training batches augmented
(augment.py) unless the model augments on the accelerator.
"""

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import PIL
import tensorflow as tf

from hparam_sweep import console, imagecache, images
from hparam_sweep.augment import augment
from hparam_sweep.common import IMAGE_SUFFIXES, joined, MANIFEST, SPLITS, TEST_SPLIT, UsageError


class ImageSet:
    """One split decoded into memory: uint8 images (N, H, W, 3), int labels (N,) and the class
    names the labels index.

    The arrays are held in CPU-side tf.Variables: tf.data map functions capture a variable by
    handle, whereas a captured constant is copied into every dataset's graph (seconds and
    gigabytes per trial at 25,000 images).
    """

    def __init__(self, images, labels, classes):
        self.classes = tuple(classes)
        with tf.device("/CPU:0"):
            self.images = tf.Variable(images, trainable=False)
            self.labels = tf.Variable(np.asarray(labels, np.int32), trainable=False)

    def __len__(self):
        return int(self.labels.shape[0])


def class_folders(directory):
    """The class folders under `directory` (a split), sorted, as Keras' image_dataset_from_directory
    labels them 0, 1, ...; hidden folders (.ipynb_checkpoints) left out."""
    return tuple(sorted(p.name for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")))


def check_data(data_dir):
    """The classes, the class folders of train/ (sorted); refused, with what to do, a data folder the
    trainer cannot read, or whose test split the final score could not read: validation/ and test/
    (if there is one: without it, no test score) must hold the same class folders as train/, at
    least 2, with images in each."""
    hint = f"run `python data_split.py --source PATH --dest {data_dir}` first, or `python train.py --demo`"
    if not (data_dir / "train").is_dir():
        raise UsageError(f"no training data in {data_dir}/train: {hint}")
    classes = class_folders(data_dir / "train")
    if len(classes) < 2:
        raise UsageError(f"{data_dir / 'train'} holds {len(classes)} class folder(s) ({joined(classes)}): a classifier "
                         f"needs one folder per class, at least 2: {hint}")
    for split in (*SPLITS, TEST_SPLIT) if (data_dir / TEST_SPLIT).exists() else SPLITS:
        split_dir = data_dir / split
        found = class_folders(split_dir) if split_dir.is_dir() else ()
        if found != classes:
            differ = [f"{', '.join(f'{c}/' for c in names)} {what}" for names, what in (
                (sorted(set(classes) - set(found)), "missing"), (sorted(set(found) - set(classes)), "not in train/"))
                if names]
            raise UsageError(f"{split_dir} must hold exactly the folders {joined(classes)}/ (found: {joined(found) or 'nothing'}), "
                             f"the classes of {data_dir / 'train'}: {'; '.join(differ)}; {hint}")
        for cls in classes:
            if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in (split_dir / cls).iterdir()):
                raise UsageError(f"{split_dir / cls} holds no images: {hint}")
    return classes


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


def split_files(directory, classes=None):
    """(paths, labels) of the images under `directory`/<class> (classes: by default the class folders
    there), in the order they decode: class by class, then as keras.utils.image_dataset_from_directory
    lists them (folders and file names sorted), hidden files (macOS' ._cat.1.jpg) left out. Nothing
    is decoded."""
    paths, labels = [], []
    for label, cls in enumerate(classes or class_folders(directory)):
        for root, _, names in sorted(os.walk(directory / cls), key=lambda walked: walked[0]):
            found = [Path(root, n) for n in sorted(names) if not n.startswith(".") and n.lower().endswith(IMAGE_SUFFIXES)]
            paths += found
            labels += [label] * len(found)
    return paths, np.asarray(labels, np.int32)


def decoded_batches(directory, paths, image_size, batch_size=256, progress=None):
    """Decode and resize the images at `paths` (split_files(directory)) batch by batch, in threads
    (Pillow and TensorFlow release the GIL): yields (start, uint8 images), so that the whole set is
    never held twice; a progress line (console.Progress, whose arguments `progress` may change) if
    it takes long."""
    def one(path):
        try:
            return images.load(path, image_size)
        except (images.BadImage, OSError) as e:
            raise UsageError(f"{path} cannot be decoded ({e.strerror if isinstance(e, OSError) else e}): "
                             f"rebuild {directory.parent} with data_split.py, which checks every image") from None

    # The full download takes a minute or more on a CPU: say how far it is.
    with console.Progress(f"decoding {directory.name}/", len(paths), **(progress or {})) as line, \
            ThreadPoolExecutor(os.cpu_count()) as pool:
        for start in range(0, len(paths), batch_size):
            batch = list(pool.map(one, paths[start:start + batch_size]))
            yield start, np.stack(batch) if batch else np.empty((0, image_size, image_size, 3), np.uint8)
            line.update(start + len(batch))


def decode_in_memory(directory, paths, image_size, batch_size=256, progress=None):
    """The uint8 images at `paths` as one NumPy array, filled batch by batch."""
    decoded = np.empty((len(paths), image_size, image_size, 3), np.uint8)
    for start, x in decoded_batches(directory, paths, image_size, batch_size, progress):
        decoded[start:start + len(x)] = x
    return decoded


def decode_to_cache(data_dir, listed, image_size, folder):
    """Write each split's images and labels into `folder` as .npy files, batch by batch (imagecache.Writer)."""
    for split, (paths, labels) in listed.items():
        with imagecache.Writer(folder / f"{split}-images.npy", (len(paths), image_size, image_size, 3), np.uint8) as out:
            for _, x in decoded_batches(data_dir / split, paths, image_size):
                out.write(x)
        with imagecache.Writer(folder / f"{split}-labels.npy", (len(paths),), np.int32) as out:
            out.write(labels)


def image_count(directory):
    """How many images training finds under `directory`'s class folders (nothing is decoded)."""
    return len(split_files(directory)[0])


def load_data(data_dir, image_size, cache_dir=None, classes=None):
    """Both splits as (train, validation) ImageSets that every trial of this process reuses, from
    the decode cache in `cache_dir` (imagecache.py: decoded there first if missing), or decoded
    in memory (cache_dir None, or a cache that cannot be written). Prints one line saying which.
    classes: check_data's (by default the class folders of train/)."""
    start = time.monotonic()
    classes = classes or class_folders(data_dir / "train")
    listed = {split: split_files(data_dir / split, classes) for split in SPLITS}
    counts = {split: len(paths) for split, (paths, _) in listed.items()}
    arrays, where = load_arrays(data_dir, image_size, cache_dir, listed, counts)
    sets = tuple(ImageSet(*arrays[split], classes) for split in SPLITS)  # copied out of the map: see ImageSet
    print(f"Images: {counts['train']} training and {counts['validation']} validation at {image_size}x{image_size}, "
          f"{where} ({time.monotonic() - start:.1f} s).", flush=True)
    return sets


def load_arrays(data_dir, image_size, cache_dir, listed, counts):
    """({split: (images, labels)}, where they came from in words) for load_data."""
    def in_memory():
        return {split: (decode_in_memory(data_dir / split, paths, image_size), labels)
                for split, (paths, labels) in listed.items()}

    if cache_dir is None:
        return in_memory(), "decoded in memory (no cache)"
    fingerprint = data_fingerprint(data_dir)
    decoder = {"tensorflow": tf.__version__, "pillow": PIL.__version__, "decode": images.VERSION, "interpolation": "bilinear"}
    name = imagecache.key(fingerprint, image_size, data_dir, {s: paths for s, (paths, _) in listed.items()}, decoder)
    about = {"data": str(data_dir.resolve()), "data_fingerprint": fingerprint, "decoder": decoder}
    try:
        arrays, decoded = imagecache.load(Path(cache_dir), name, counts, image_size,
                                          lambda folder: decode_to_cache(data_dir, listed, image_size, folder), about)
    except OSError as e:  # read-only, disk full, not a folder: train anyway, from memory
        return in_memory(), f"decoded in memory: the decode cache in {cache_dir} cannot be written ({e.strerror or e})"
    folder = Path(cache_dir) / name
    size = imagecache.size_of(folder)
    size = f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"
    if decoded:
        return arrays, f"decoded into the decode cache {folder} ({size}): later runs on this machine read them from there"
    return arrays, f"read from the decode cache {folder} ({size}), not decoded"


def load_split(directory, image_size, batch_size=256, progress=None):
    """Decode and resize every image under `directory`'s class folders once, into an ImageSet (in memory, no cache)."""
    classes = class_folders(directory)
    paths, labels = split_files(directory, classes)
    return ImageSet(decode_in_memory(directory, paths, image_size, batch_size, progress), labels, classes)


def _batches(data, order, batch_size):
    """Batches of (uint8 images, one-hot labels) gathered from `data` in the given index order."""
    return order.batch(batch_size).map(
        lambda idx: (tf.gather(data.images, idx), tf.one_hot(tf.gather(data.labels, idx), len(data.classes))),
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
