"""Input pipeline: decode every image once, then feed all trials from memory.

The tutorial's ImageDataGenerator decoded and warped every JPEG again in every epoch of every
trial (36 trials x 5 epochs = 180 decodes per image). Here `load_split` decodes a split once with
`keras.utils.image_dataset_from_directory` into a uint8 array (150x150x3 = 67.5 KB an image:
25,000 images take about 1.7 GB), and `train_dataset` / `validation_dataset` serve batches from it.

Augmentation follows the tutorial's ImageDataGenerator settings (rotation up to 45 degrees,
width/height shift 0.15, zoom 0.3, horizontal flip, bilinear sampling, nearest fill) but costs one
`ImageProjectiveTransformV3` call per batch: all four transforms are composed into one affine
matrix per image. Keras' RandomRotation/RandomTranslation/RandomZoom would warp each batch three
times and, inside a model, switch XLA off for the whole model, so the transform runs in the
tf.data pipeline instead, in parallel with training and prefetched.
"""

import math
import numpy as np
import tensorflow as tf
import keras

CLASS_NAMES = ("cats", "dogs")
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")  # what image_dataset_from_directory reads

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


def load_split(directory, image_size, batch_size=256):
    """Decode and resize every image under `directory/{cats,dogs}` once, into an ImageSet."""
    ds = keras.utils.image_dataset_from_directory(
        directory,
        labels="inferred",
        label_mode="int",
        class_names=list(CLASS_NAMES),
        image_size=(image_size, image_size),
        interpolation="bilinear",
        batch_size=batch_size,
        shuffle=False,
        verbose=False,
    )
    images, labels = [], []
    for x, y in ds:
        images.append(tf.cast(tf.round(x), tf.uint8).numpy())
        labels.append(y.numpy())
    if not images:
        raise ValueError(f"no images in {directory}")
    return ImageSet(np.concatenate(images), np.concatenate(labels).astype(np.int32))


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


def _batches(data, order, batch_size):
    """Batches of (uint8 images, one-hot labels) gathered from `data` in the given index order."""
    return order.batch(batch_size).map(
        lambda idx: (tf.gather(data.images, idx), tf.one_hot(tf.gather(data.labels, idx), len(CLASS_NAMES))),
        num_parallel_calls=tf.data.AUTOTUNE,
    )


def train_dataset(data, batch_size, seed, augmented=True):
    """An endless, seeded, reshuffled-every-pass stream of augmented training batches."""
    order = tf.data.Dataset.range(len(data)).shuffle(len(data), seed=seed, reshuffle_each_iteration=True).repeat()
    ds = _batches(data, order, batch_size)
    if augmented:
        ds = ds.enumerate().map(
            lambda i, batch: (augment(batch[0], tf.stack([tf.cast(seed, tf.int64), i])), batch[1]),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.prefetch(tf.data.AUTOTUNE)


def validation_dataset(data, batch_size):
    """Validation batches in file order, never augmented."""
    return _batches(data, tf.data.Dataset.range(len(data)), batch_size).prefetch(tf.data.AUTOTUNE)
