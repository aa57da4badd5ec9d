"""Image files to pixels: the one decode that data_split.py, training, the test score and predict.py share.

    pixels(data)          file bytes -> upright 8-bit RGB (H, W, 3) uint8, or BadImage with the reason
    for_model(pixels, s)  -> the model's input: (s, s, 3) uint8, TensorFlow's bilinear resize
    load(path, s)         both, from a file

Upright RGB: the EXIF orientation applied, CMYK, palette and grayscale made RGB, 16-bit images
scaled to 8 bits (PIL's convert("RGB") would clip them to white), transparent pixels shown on
white. data_split.py stores every image that needs any of that as this RGB, losslessly (PNG),
and copies plain RGB JPEGs byte for byte; so training, which decodes the split's files here, and
predict.py, which decodes a user's raw files here, see the same pixels for the same photo.

Plain RGB JPEGs are decoded by TensorFlow, not Pillow: its decoder (libjpeg-turbo's fast integer
IDCT) is the one every trial has trained on so far, and Pillow's (the accurate IDCT) differs by up
to 4 levels, which would change every existing decode cache and result. Everything else is
decoded by Pillow, which alone knows EXIF, CMYK and 16-bit images.

NumPy and TensorFlow are imported only where a decode needs them, so that data_split.py --help
answers at once.
"""

import functools
import io
import struct

from PIL import Image, ImageOps

from hparam_sweep.common import why

# Formats Pillow may decode; anything else (EPS would start Ghostscript) counts as "not an image".
DECODE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF")  # JPEG also opens MPO
MAX_PIXELS = 40_000_000  # well above any real photo (the Kaggle set tops out near 0.5 MP), far below a bomb
MAX_FILE_BYTES = 64 * 2**20  # larger "images" are refused unread: no photo is near that
# What Pillow raises on bad image data (UnidentifiedImageError is an OSError; struct.error comes from
# EXIF fields whose type does not fit their tag). Anything else, a MemoryError or a TypeError inside
# Pillow, is not the file's fault and is left to propagate.
BAD_DATA = (OSError, SyntaxError, ValueError, struct.error)
EXIF_ORIENTATION = 0x0112
BACKGROUND = (255, 255, 255)  # what transparent pixels are shown on
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # "I": 16-bit PNG and TIFF in some Pillow releases
# Bump when `pixels` gives other pixels for some file: the decode cache keys on it.
VERSION = 2


class BadImage(Exception):
    """A file that is not a usable image; the message is the reason, in plain words."""


def open_image(data, max_pixels=MAX_PIXELS, load=True):
    """Image bytes opened with Pillow (fully decoded unless load=False: the header and EXIF only),
    refused with BadImage when they are not a usable image or have more than max_pixels pixels."""
    if not data:
        raise BadImage("empty file")
    try:
        image = Image.open(io.BytesIO(data), formats=DECODE_FORMATS)  # the header only: the size is known first
        if image.width * image.height <= max_pixels:
            if load:
                image.load()
            image.getexif()  # corrupt EXIF would otherwise fail later, in exif_transpose
    except Image.DecompressionBombError as error:
        raise BadImage(f"too many pixels: {error}") from None
    except Image.UnidentifiedImageError:
        raise BadImage("not an image") from None
    except BAD_DATA as error:
        raise BadImage(f"corrupt image: {type(error).__name__}: {error}") from None
    if image.width * image.height > max_pixels:
        raise BadImage(f"too many pixels: {image.width}x{image.height} (limit {max_pixels})")
    return image


def needs_conversion(image):
    """False for JPEG data in RGB with no rotation to apply (decoded as they are); True for the rest."""
    orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    return image.format not in ("JPEG", "MPO") or image.mode != "RGB" or orientation != 1


def upright_rgb(image):
    """The image as upright 8-bit RGB (a PIL image): EXIF orientation applied, 16-bit scaled, alpha
    over BACKGROUND. Raises BadImage for data that opened but cannot be converted (bad EXIF)."""
    import numpy as np

    try:
        image = ImageOps.exif_transpose(image)
        if image.mode in SIXTEEN_BIT:
            # round(v * 255 / 65535), exactly, in integers.
            wide = np.clip(np.asarray(image, np.int64), 0, 65535)
            image = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")
        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
            image = Image.alpha_composite(Image.new("RGBA", image.size, BACKGROUND), image.convert("RGBA"))
        return image.convert("RGB")
    except BAD_DATA as error:
        raise BadImage(f"corrupt image: {type(error).__name__}: {error}") from None


def pixels(data, max_pixels=MAX_PIXELS):
    """Image file bytes as upright 8-bit RGB: a (H, W, 3) uint8 array. Raises BadImage."""
    import numpy as np

    image = open_image(data, max_pixels, load=False)
    if needs_conversion(image):
        return np.asarray(upright_rgb(loaded(image)))
    decode, _ = graphs()
    import tensorflow as tf

    try:  # as keras.utils.image_dataset_from_directory decodes (TensorFlow's default, fast IDCT)
        return decode(data).numpy()
    except tf.errors.InvalidArgumentError as error:
        loaded(image)  # Pillow's reason is plainer ("image file is truncated") than TensorFlow's
        raise BadImage(f"corrupt image: {why(error)}") from None


def loaded(image):
    """image with its pixels decoded; BadImage if they are broken."""
    try:
        image.load()
    except BAD_DATA as error:
        raise BadImage(f"corrupt image: {type(error).__name__}: {error}") from None
    return image


def for_model(rgb, image_size):
    """Upright RGB pixels as the model's input: resized to image_size (a side, or (height, width))
    with TensorFlow's bilinear resize without antialiasing (as keras.utils.image_dataset_from_directory
    resizes, not PIL's antialiased resize of keras.utils.load_img), then rounded to uint8."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    return graphs()[1](rgb, size).numpy()


@functools.cache
def graphs():
    """(decode, resize) as TensorFlow graphs, traced once: called eagerly, their few ops cost more
    in Python overhead than the work itself (training decodes every image through them)."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def decode(data):
        return tf.io.decode_image(data, channels=3, expand_animations=False)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8), tf.TensorSpec([2], tf.int32)])
    def resize(rgb, size):
        return tf.cast(tf.round(tf.image.resize(rgb, size, method="bilinear")), tf.uint8)

    return decode, resize


def read(path, max_bytes=MAX_FILE_BYTES):
    """A file's bytes; BadImage if it is larger than max_bytes (refused unread). OSError if unreadable."""
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise BadImage(f"file too large: over {max_bytes} bytes")
    return data


def load(path, image_size):
    """One image file as the model's input, decoded as training decodes it: (image_size, image_size, 3)
    uint8. Raises BadImage (not an image, broken, too large) or OSError (cannot be read)."""
    return for_model(pixels(read(path)), image_size)
