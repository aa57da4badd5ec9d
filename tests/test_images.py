"""One decode: for every format data_split.py accepts, predict.py on the raw file gives the pixels
that training saw for that file after data_split.py; and predict.py's bad inputs are plain lines."""

import io
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from test_data_split import encoded, kaggle_images, png_header, read_csv, upright_test_image, write_files

import data_split
import predict
from hparam_sweep import images, pipeline

SIZE = 20  # the images are 24x40 (or turned, 40x24): the resize matters


def rotated_for_exif(orientation):
    """The upright test image stored as a camera would, with the EXIF tag that turns it back."""
    stored = upright_test_image().transpose({3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
                                             8: Image.Transpose.ROTATE_270}[orientation])
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION] = orientation
    return encoded(stored, quality=95, exif=exif.tobytes())


def sixteen_bit_png():
    """A 16-bit grayscale PNG (Pillow mode I;16): a ramp over the whole 16-bit range."""
    ramp = (np.arange(40 * 24, dtype=np.uint32).reshape(40, 24) * 65535 // (40 * 24 - 1)).astype(np.uint16)
    image = Image.fromarray(ramp)
    assert image.mode == "I;16"
    return encoded(image, "PNG")


def transparent(mode):
    """The test image half transparent, as RGBA, LA or a palette image with a transparent colour."""
    image = upright_test_image().convert("RGBA")
    image.putalpha(Image.linear_gradient("L").resize(image.size))
    if mode == "P":
        image = upright_test_image().convert("P")
        return encoded(image, "PNG", transparency=0)
    return encoded(image.convert(mode), "PNG")


FORMS = {
    "cat.1.jpg": rotated_for_exif(3),
    "cat.2.jpg": rotated_for_exif(6),
    "cat.3.jpg": rotated_for_exif(8),
    "cat.4.png": sixteen_bit_png(),
    "cat.5.jpg": encoded(upright_test_image().convert("CMYK")),
    "cat.6.jpg": encoded(upright_test_image().convert("L")),
    "cat.7.png": transparent("RGBA"),
    "cat.8.png": transparent("LA"),
    "cat.9.png": transparent("P"),
    "cat.10.webp": encoded(upright_test_image(), "WEBP"),
    "cat.11.tif": encoded(upright_test_image(), "TIFF"),
    "cat.12.tiff": encoded(upright_test_image().convert("I;16"), "TIFF"),
    "cat.13.gif": encoded(upright_test_image(), "GIF"),
    "cat.14.bmp": encoded(upright_test_image(), "BMP"),
    "cat.15.jpg": encoded(upright_test_image(), quality=90),  # plain RGB JPEG: copied, decoded by TensorFlow
    "cat.16.png": encoded(upright_test_image(), "JPEG"),  # JPEG data under another name
}


class Recorder:
    """A stand-in model: keeps what predict.py hands it."""

    def __init__(self):
        self.seen = []

    def predict(self, batch, verbose=0):
        self.seen += list(batch)
        return np.tile([0.25, 0.75], (len(batch), 1))


def test_predict_on_the_raw_file_sees_exactly_what_training_saw_after_data_split(tmp_path, capsys):
    source = write_files(tmp_path / "raw", FORMS | {k: v for k, v in kaggle_images(4).items() if k.startswith("dog")})
    assert data_split.main(["--source", str(source), "--dest", str(tmp_path / "data"), "--test-fraction", "0",
                            "--val-fraction", "0.01"]) == 0
    rows = {r["source"].split("/")[-1]: r for r in read_csv(tmp_path / "data" / data_split.MANIFEST)}
    trained = pipeline.load_split(tmp_path / "data" / "train", SIZE)  # training's own decode of the split
    paths, _ = pipeline.split_files(tmp_path / "data" / "train")
    seen_in_training = dict(zip([p.relative_to(tmp_path / "data").as_posix() for p in paths], trained.images.numpy()))

    model, skipped = Recorder(), []
    raw_files = [source / name for name in FORMS if rows[name]["split"] == "train"]
    assert len(raw_files) >= len(FORMS) - 1  # at most one image went to validation
    predict.classify(model, raw_files, (SIZE, SIZE), skipped)
    assert skipped == []
    for path, pixels in zip(raw_files, model.seen):
        assert np.array_equal(pixels, seen_in_training[rows[path.name]["path"]]), path.name

    # And they are right: upright (red on top), 16-bit scaled, not clipped to white.
    upright = images.load(source / "cat.15.jpg", SIZE).astype(int)
    for name in ("cat.1.jpg", "cat.2.jpg", "cat.3.jpg", "cat.5.jpg", "cat.10.webp"):
        assert np.abs(images.load(source / name, SIZE).astype(int) - upright).mean() < 8, name
    ramp = images.load(source / "cat.4.png", SIZE)
    assert 100 < ramp.mean() < 155 and ramp[0].mean() < 30 and ramp[-1].mean() > 225
    on_white = images.pixels((source / "cat.7.png").read_bytes())
    assert on_white[0, 0].min() > 245 and on_white[-1, 0, 2] == 255 and on_white[-1, 0, 0] < 10  # top on white


def test_a_sixteen_bit_image_is_scaled_exactly():
    values = np.array([[0, 1, 128, 129, 257, 32767, 32768, 65534, 65535]], np.uint16)
    rgb = images.pixels(encoded(Image.fromarray(values), "PNG"))
    assert rgb[0, :, 0].tolist() == [round(v * 255 / 65535) for v in values[0].tolist()]


def test_predict_refuses_what_data_split_refuses_with_the_same_limit(tmp_path, capsys):
    folder = write_files(tmp_path / "in", {"huge.png": png_header(15000, 15000), "big.png": png_header(10000, 5000),
                                           "empty.jpg": b""})
    files, skipped = predict.image_files([folder])
    predict.classify(Recorder(), files, (SIZE, SIZE), skipped)
    reasons = dict((p.name, r) for p, r in skipped)
    assert reasons["huge.png"].startswith("too many pixels: ")  # refused from its header, never decoded
    assert reasons["big.png"] == f"too many pixels: 10000x5000 (limit {images.MAX_PIXELS})"
    assert reasons["empty.jpg"] == "empty file"


@pytest.fixture
def model_file(tmp_path_factory):
    """A tiny saved model that takes 20x20 uint8 images, and one that takes any size."""
    import keras

    folder = tmp_path_factory.mktemp("models")
    for name, shape in (("fixed.keras", (SIZE, SIZE, 3)), ("any.keras", (None, None, 3))):
        inputs = keras.Input(shape, dtype="uint8")
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
        keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)).save(folder / name)
    return folder


def photos(tmp_path):
    """A folder with two good images, a truncated one, and what is not a regular file or readable."""
    folder = write_files(tmp_path / "photos", {"a.jpg": FORMS["cat.15.jpg"], "b.png": FORMS["cat.7.png"],
                                              "broken.jpg": FORMS["cat.15.jpg"][:300], "notes.txt": b"hi"})
    os.mkfifo(folder / "pipe.jpg")
    (folder / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    with open(os.fsencode(folder) + b"/caf\xe9.jpg", "wb") as f:  # a name that is not UTF-8
        f.write(FORMS["cat.2.jpg"])
    shutil.copy(folder / "a.jpg", folder / "locked.jpg")
    return folder


def test_predict_lists_every_file_it_cannot_classify_with_a_plain_reason(tmp_path, model_file, monkeypatch, capsys):
    folder = photos(tmp_path)
    real_open = open

    def refusing_open(path, *args, **kwargs):  # as a file without read permission (tests run as root)
        if str(path).endswith("locked.jpg"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(images, "open", refusing_open, raising=False)
    rows = tmp_path / "rows.csv"
    assert predict.main([str(folder), "--model", str(model_file / "fixed.keras"), "--csv", str(rows)]) == 0
    err = capsys.readouterr().err
    said = dict(re.findall(r"^skipped (.*?): (.*)$", err, re.M))
    assert said.pop(f"{folder}/broken.jpg").startswith("corrupt image: ") and "{{" not in err
    assert said == {
        f"{folder}/gone.jpg": "broken symbolic link",
        f"{folder}/locked.jpg": "cannot be read (Permission denied)",
        f"{folder}/notes.txt": "not an image file (.txt)",
        f"{folder}/pipe.jpg": "not a regular file (a named pipe)",
    }
    assert "Traceback" not in err and "3 image(s) classified, 5 skipped" in err
    assert sorted(r["path"] for r in read_csv(rows)) == [f"{folder}/a.jpg", f"{folder}/b.png", f"{folder}/caf\\xe9.jpg"]


@pytest.mark.parametrize("case", ["csv-in-missing-folder", "csv-onto-folder", "not-a-model", "export-onto-file",
                                  "export-under-file", "any-size-model"])
def test_a_bad_argument_is_one_line_and_exit_2_before_any_work(tmp_path, model_file, monkeypatch, capsys, case):
    folder = photos(tmp_path)
    (tmp_path / "notes.keras").write_text("not a model")
    (tmp_path / "taken").write_text("a file")
    fixed = ["--model", str(model_file / "fixed.keras")]
    argv, said = {
        "csv-in-missing-folder": ([*fixed, "--csv", str(tmp_path / "no" / "rows.csv")], "does not exist"),
        "csv-onto-folder": ([*fixed, "--csv", str(folder)], "is a folder"),
        "not-a-model": (["--model", str(tmp_path / "notes.keras")], "is not a Keras model file"),
        "export-onto-file": ([*fixed, "--export", str(tmp_path / "taken")], "is a file"),
        "export-under-file": ([*fixed, "--export", str(tmp_path / "taken" / "model")], "does not exist"),
        "any-size-model": (["--model", str(model_file / "any.keras")], "give --image-size N"),
    }[case]
    monkeypatch.setattr(predict, "classify", lambda *a: pytest.fail("worked before refusing"))
    assert predict.main([str(folder), *argv]) == predict.EXIT_USAGE
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and said in err and err.startswith("predict.py: error: "), err


def test_a_model_that_takes_any_size_classifies_at_the_size_given(tmp_path, model_file, capsys):
    folder = write_files(tmp_path / "in", {"a.jpg": FORMS["cat.15.jpg"]})
    assert predict.main([str(folder), "--model", str(model_file / "any.keras"), "--image-size", "16"]) == 0
    assert re.fullmatch(r"(cat|dog) [01]\.\d\d  \S+a\.jpg\n", capsys.readouterr().out)


def test_an_output_that_cannot_be_written_at_the_end_is_one_line_and_exit_3(tmp_path, model_file, monkeypatch, capsys):
    folder = write_files(tmp_path / "in", {"a.jpg": FORMS["cat.15.jpg"]})
    rows = tmp_path / "rows.csv"

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(predict.csv, "writer", disk_full)
    assert predict.main([str(folder), "--model", str(model_file / "fixed.keras"), "--csv", str(rows)]) == 3
    err = capsys.readouterr().err
    assert f"predict.py: cannot write {rows} (No space left on device)" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # nothing half-written
