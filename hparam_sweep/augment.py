"""The tutorial's augmentation as one affine warp per image.

It follows the tutorial's ImageDataGenerator settings (rotation up to 45 degrees, width/height
shift 0.15, zoom 0.3, horizontal flip, bilinear sampling, nearest fill) but costs one
`ImageProjectiveTransformV3` call per batch: all four transforms are composed into one affine
matrix per image. Keras' RandomRotation/RandomTranslation/RandomZoom would warp each batch three
times and, inside a model, switch XLA off for the whole model. On a CPU the transform runs in
the tf.data pipeline (pipeline.train_dataset), in parallel with training and prefetched; on a GPU
it runs on the GPU as the model's first layer (`RandomAffine`), written so that XLA can compile
it with the rest of the step.
"""

import math

import keras
import tensorflow as tf

# The tutorial's ImageDataGenerator(rotation_range=45, width_shift_range=.15,
# height_shift_range=.15, zoom_range=0.3, horizontal_flip=True).
ROTATION_DEGREES = 45.0
SHIFT_FRACTION = 0.15
ZOOM_RANGE = 0.3


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
