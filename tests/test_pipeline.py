"""The input pipeline: decode once, augment as the tutorial did, on the CPU or inside the model."""

import numpy as np
import tensorflow as tf

from hparam_sweep import augment, pipeline


def test_augmentation_ranges_match_the_tutorial():
    n, size = 20000, 100.0
    t = augment.augment_params(tf.constant([1, 2], tf.int64), n, size, size).numpy()
    a0, a1, a2, b0, b1, b2 = (t[:, i] for i in range(6))
    flipped = a0 * (b1) - a1 * b0 < 0  # a flip makes the linear part's determinant negative
    assert 0.45 < flipped.mean() < 0.55
    sign = np.where(flipped, -1.0, 1.0)
    angle = np.degrees(np.arctan2(b0 * sign, a0 * sign))
    zx, zy = np.hypot(a0, b0), np.hypot(a1, b1)
    assert -45 <= angle.min() < -44 and 44 < angle.max() <= 45
    assert 0.7 <= zx.min() < 0.71 and 1.29 < zx.max() <= 1.3
    assert 0.7 <= zy.min() < 0.71 and 1.29 < zy.max() <= 1.3
    # Where the image centre is sampled from: centre + R @ shift, so |R^-1 (that - centre)| <= 0.15 * size.
    c = (size - 1) / 2
    src_x = a0 * c + a1 * c + a2 - c
    src_y = b0 * c + b1 * c + b2 - c
    rad = np.radians(angle)
    shift_x = np.cos(rad) * src_x + np.sin(rad) * src_y
    shift_y = -np.sin(rad) * src_x + np.cos(rad) * src_y
    assert np.abs(shift_x).max() <= 0.15 * size + 1e-3 and np.abs(shift_x).max() > 0.14 * size
    assert np.abs(shift_y).max() <= 0.15 * size + 1e-3 and np.abs(shift_y).max() > 0.14 * size


def test_augment_fills_with_nearest_and_keeps_uint8():
    flat = tf.fill([4, 16, 16, 3], tf.constant(77, tf.uint8))
    out = augment.augment(flat, tf.constant([0, 0], tf.int64))
    assert out.dtype == tf.uint8 and out.shape == (4, 16, 16, 3)
    assert np.all(out.numpy() == 77)  # nearest fill: no black corners after rotating


def test_validation_is_never_augmented_and_training_is(dataset):
    train_set = pipeline.load_split(dataset / "train", 24)
    val_set = pipeline.load_split(dataset / "validation", 24)
    images = np.concatenate([x.numpy() for x, _ in pipeline.validation_dataset(val_set, 3)])
    labels = np.concatenate([y.numpy() for _, y in pipeline.validation_dataset(val_set, 3)])
    assert np.array_equal(images, val_set.images.numpy())
    assert np.array_equal(labels.argmax(1), val_set.labels.numpy())

    x, y = next(iter(pipeline.train_dataset(train_set, 24, seed=1)))
    plain, _ = next(iter(pipeline.train_dataset(train_set, 24, seed=1, augmented=False)))
    assert not np.array_equal(x.numpy(), plain.numpy())
    # Same seed, same batches: order and augmentation are reproducible.
    again, _ = next(iter(pipeline.train_dataset(train_set, 24, seed=1)))
    assert np.array_equal(x.numpy(), again.numpy())


def test_warp_matches_the_input_pipelines_transform():
    """RandomAffine's XLA-compatible warp samples exactly as ImageProjectiveTransformV3 does."""
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (16, 20, 28, 3)), tf.float32)
    transforms = augment.augment_params(tf.constant([3, 4], tf.int64), 16, 20.0, 28.0)
    reference = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=[20, 28], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="NEAREST")
    ours = tf.function(augment.warp, jit_compile=True)(images, transforms)
    assert np.abs(ours.numpy() - reference.numpy()).max() < 0.01


def test_the_training_stream_resumed_at_any_step_is_the_uninterrupted_one(dataset):
    """Batch k (images, order, augmentation) is a pure function of (seed, k), with or without
    --deterministic: a trial resumed at step k sees what it would have seen, across passes too."""
    train_set = pipeline.load_split(dataset / "train", 24)  # 24 images: a pass is 3 batches of 8
    stream = pipeline.train_dataset(train_set, 8, seed=5)
    straight = [(x.numpy(), y.numpy()) for x, y in stream.take(7)]
    for start in (1, 3, 5):
        resumed = pipeline.train_dataset(train_set, 8, seed=5, start_step=start)
        for (x, y), (x0, y0) in zip(resumed.take(7 - start), straight[start:]):
            assert np.array_equal(x.numpy(), x0) and np.array_equal(y.numpy(), y0)
    # Each pass holds every image once, in a new order.
    labels = np.concatenate([y for _, y in straight[:3]]).argmax(1)
    assert sorted(labels) == sorted(train_set.labels.numpy())
    first_pass = np.concatenate([x for x, _ in straight[:3]])
    second_pass = np.concatenate([x for x, _ in straight[3:6]])
    assert not np.array_equal(first_pass, second_pass)


def test_training_and_validation_streams_run_without_tf_data_autotuning(dataset):
    """With autotuning on, model.fit stalls as it returns, for up to the autotuner's sleep (pipeline._untuned)."""
    train_set = pipeline.load_split(dataset / "train", 24)
    for ds in (pipeline.train_dataset(train_set, 8, seed=5), pipeline.train_dataset(train_set, 8, seed=5, augmented=False),
               pipeline.validation_dataset(train_set, 8)):
        assert ds.options().autotune.enabled is False
