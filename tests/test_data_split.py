"""End-to-end tests of data_split.py on tiny images built in tmp_path: python -m pytest -q tests/test_data_split.py"""

import csv
import errno
import hashlib
import io
import json
import os
import re
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import warnings
import zipfile
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from hparam_sweep import common, images, splitting
from hparam_sweep.sources import Entry
import data_split

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path, monkeypatch):
    """Run every test in tmp_path, so that a run without --dest writes ./data there, not in the checkout."""
    monkeypatch.chdir(tmp_path)


def jpeg(seed: int, size: int = 16) -> bytes:
    """A small RGB JPEG of random pixels: a different seed gives different bytes."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


def kaggle_images(n: int = 6) -> dict[str, bytes]:
    """cat.N.jpg / dog.N.jpg names and bytes, as in Kaggle's train.zip."""
    return {f"{label}.{i}.jpg": jpeg(seed=i + 100 * (label == "dog")) for label in ("cat", "dog") for i in range(n)}


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    """Write {relative name: bytes} under root; return root."""
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def zip_bytes(files: dict[str, bytes] | list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    """A zip archive of {member name: bytes}, or of (name, bytes) pairs in that order (names may repeat)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Duplicate name", UserWarning)
        for name, data in files.items() if isinstance(files, dict) else files:
            archive.writestr(name, data)
    return buffer.getvalue()


def members(archive: bytes) -> list[tuple[str, bytes]]:
    """(name, bytes) of every member of a zip, in archive order."""
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        return [(info.filename, z.read(info)) for info in z.infolist()]


def damaged(archive: bytes, name: str, how: str) -> bytes:
    """archive with member `name` damaged: "crc" flips a byte of its data, "deflate" makes its compressed
    data invalid (0xff: a reserved block type), "encrypted" sets its encryption flag (no password works)."""
    data = bytearray(archive)
    with zipfile.ZipFile(io.BytesIO(archive)) as z:
        info = z.getinfo(name)
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_length + extra_length  # the member's data, after its local header
    if how == "crc":
        data[start + info.compress_size // 2] ^= 0xFF
    elif how == "deflate":
        data[start:start + info.compress_size] = b"\xff" * info.compress_size
    else:
        data[info.header_offset + 6] |= 1  # local header's flags
        central = data.index(b"PK\x01\x02")
        while data[central + 46:central + 46 + struct.unpack("<H", data[central + 28:central + 30])[0]] != name.encode():
            central = data.index(b"PK\x01\x02", central + 4)
        data[central + 8] |= 1  # central directory's flags
    return bytes(data)


def run(capsys, *args) -> tuple[int, str, str]:
    """data_split.main(args) with its exit code, stdout and stderr."""
    code = data_split.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def read_csv(path: Path) -> list[dict]:
    """The rows of a CSV file with a header, as dicts."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under root (or of root itself), by relative path."""
    files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
    return {p.relative_to(root.parent).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def all_files(root: Path) -> set[str]:
    """Every file and folder below root, as relative posix paths."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def assignment(dest: Path) -> set[tuple]:
    """What a split decided, independent of where the images came from."""
    return {(row["path"], row["label"], row["split"], row["sha256"]) for row in read_csv(dest / data_split.MANIFEST)}


def hashes_on_disk(dest: Path) -> dict[str, set[str]]:
    """sha256 of the files in each split folder DEST holds, read from disk rather than manifest.csv."""
    return {folder.name: {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*/*")}
            for folder in dest.iterdir() if folder.name in (*data_split.SPLITS, data_split.TEST_SPLIT)}


def assert_no_image_in_two_splits(dest: Path):
    """No sha256 in two splits: neither in manifest.csv nor in the folders' files."""
    splits_of = defaultdict(set)
    for row in read_csv(dest / data_split.MANIFEST):
        splits_of[row["sha256"]].add(row["split"])
    assert all(len(splits) == 1 for splits in splits_of.values())
    found = hashes_on_disk(dest)
    for a in found:
        for b in found:
            assert a == b or not found[a] & found[b], (a, b)


def list_in_reverse(monkeypatch):
    """Make data_split list folders and archives in the opposite order: deepest folder first, Z to A."""
    walk = data_split.os.walk

    def reversed_walk(top, *args, **kwargs):
        for folder, dirs, names in reversed(list(walk(top, *args, **kwargs))):
            yield folder, sorted(dirs, reverse=True), sorted(names, reverse=True)

    monkeypatch.setattr(data_split.os, "walk", reversed_walk)
    monkeypatch.setattr(zipfile.ZipFile, "infolist", lambda self: self.filelist[::-1])


# ---------------------------------------------------------------- layouts and archives


def test_flat_folder_gives_keras_layout_manifest_and_summary(tmp_path, capsys):
    images = kaggle_images(10)
    source = write_files(tmp_path / "train", images)
    dest = tmp_path / "data"
    code, out, _ = run(capsys, "--source", source, "--dest", dest)
    assert code == 0
    for split in (*data_split.SPLITS, data_split.TEST_SPLIT):  # --test-fraction's default: a test split too
        for class_dir in data_split.CLASS_DIRS:
            assert (dest / split / class_dir).is_dir()
    with (dest / data_split.MANIFEST).open() as f:
        assert f.readline().strip() == "path,source,label,split,sha256"
    rows = read_csv(dest / data_split.MANIFEST)
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)
    assert sorted(r["source"] for r in rows) == sorted(f"train/{name}" for name in images)  # each image once
    for row in rows:
        name = row["source"].split("/")[-1]
        assert row["path"] == f"{row['split']}/{row['label']}s/{name}"
        assert (dest / row["path"]).read_bytes() == images[name]  # plain RGB JPEGs: copied byte for byte
        assert row["sha256"] == hashlib.sha256(images[name]).hexdigest()
    splits = [(r["label"], r["split"]) for r in rows]
    assert splits.count(("cat", "validation")) == splits.count(("dog", "validation")) == 2  # stratified 20%
    assert splits.count(("cat", "test")) == splits.count(("dog", "test")) == 1  # and 10%
    assert re.search(r"^\s+train\s+validation\s+test$", out, re.M) and "20% validation, 10% test" in out
    assert re.search(r"^cats\s+7\s+2\s+1$", out, re.M) and re.search(r"^dogs\s+7\s+2\s+1$", out, re.M)
    assert "rejected 0" in out
    assert read_csv(dest / data_split.REJECTED) == []
    assert json.loads((dest / data_split.SPLIT_JSON).read_text())["seed"] == 42
    assert not (dest / data_split.STAGING).exists()


def test_kaggle_zip_forms_match_the_extracted_folder(tmp_path, capsys, monkeypatch):
    images = kaggle_images()
    folder = write_files(tmp_path / "extracted" / "train", images)
    train_zip = zip_bytes({f"train/{name}": data for name, data in images.items()})
    (tmp_path / "train.zip").write_bytes(train_zip)
    competition = {
        "train.zip": train_zip,
        "test1.zip": zip_bytes({f"test1/{i}.jpg": jpeg(500 + i) for i in range(1, 5)}),  # unlabelled
        "sampleSubmission.csv": b"id,label\n1,0\n",
    }
    (tmp_path / "dogs-vs-cats.zip").write_bytes(zip_bytes(competition))
    results = {}
    for source in (folder, tmp_path / "train.zip", tmp_path / "dogs-vs-cats.zip"):
        dest = tmp_path / f"out-{source.name}"
        code, out, _ = run(capsys, "--source", source, "--dest", dest)
        assert code == 0
        results[source.name] = assignment(dest)
        assert len(results[source.name]) == 12
    monkeypatch.setattr("hparam_sweep.sources.SPOOL_BYTES", 1000)  # a nested zip too big for memory goes into DEST
    assert run(capsys, "--source", tmp_path / "dogs-vs-cats.zip", "--dest", tmp_path / "spilled")[0] == 0
    results["spilled"] = assignment(tmp_path / "spilled")
    assert results["train"] == results["train.zip"] == results["dogs-vs-cats.zip"] == results["spilled"]
    assert "ignored: 4 unlabelled images, 1 non-image files" in out
    sources = {r["source"] for r in read_csv(tmp_path / "out-dogs-vs-cats.zip" / data_split.MANIFEST)}
    assert "dogs-vs-cats.zip!train.zip!train/cat.0.jpg" in sources
    assert not any("test1" in s for s in sources)


@pytest.mark.parametrize("as_zip", [False, True], ids=["PetImages-folder", "kagglecatsanddogs-zip"])
def test_microsoft_petimages_with_thumbs_db_and_corrupt_files(tmp_path, capsys, as_zip):
    files = {f"PetImages/{folder}/{i}.jpg": jpeg(i + 50 * (folder == "Dog")) for folder in ("Cat", "Dog") for i in range(5)}
    files |= {
        "PetImages/Cat/Thumbs.db": b"\xd0\xcf\x11\xe0" + bytes(200),
        "PetImages/Dog/Thumbs.db": b"\xd0\xcf\x11\xe0" + bytes(300),
        "PetImages/Cat/666.jpg": b"",
        "PetImages/Dog/11702.jpg": jpeg(99)[:-200],
    }
    if as_zip:
        files = {"kagglecatsanddogs_5340.zip": zip_bytes(files | {"readme[1].txt": b"Microsoft"})}
    write_files(tmp_path / "download", files)
    source = tmp_path / "download" / ("kagglecatsanddogs_5340.zip" if as_zip else "PetImages")
    code, out, _ = run(capsys, "--source", source, "--dest", tmp_path / "data")
    assert code == 0
    rows = read_csv(tmp_path / "data" / data_split.MANIFEST)
    assert len(rows) == 10
    assert all(r["label"] == ("cat" if "/Cat/" in r["source"] else "dog") for r in rows)
    assert not any("Thumbs" in r["source"] for r in rows)
    prefix = "kagglecatsanddogs_5340.zip!" if as_zip else ""
    rejected = {r["source"]: r["reason"] for r in read_csv(tmp_path / "data" / data_split.REJECTED)}
    assert sorted(rejected) == [f"{prefix}PetImages/Cat/666.jpg", f"{prefix}PetImages/Dog/11702.jpg"]
    assert rejected[f"{prefix}PetImages/Cat/666.jpg"] == "empty file"
    assert rejected[f"{prefix}PetImages/Dog/11702.jpg"].startswith("corrupt image")
    assert "rejected 2: 1 corrupt image, 1 empty file" in out


def test_crafted_zip_writes_nothing_outside_dest_and_says_why(tmp_path, capsys, monkeypatch):
    link = zipfile.ZipInfo("train/cat.103.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in kaggle_images(3).items():
            archive.writestr(f"train/{name}", data)
        archive.writestr(zipfile.ZipInfo(f"{tmp_path}/outside/cat.100.jpg"), jpeg(100))
        archive.writestr(zipfile.ZipInfo("../cat.101.jpg"), jpeg(101))
        archive.writestr(zipfile.ZipInfo("train/../../dog.102.jpg"), jpeg(102))
        archive.writestr(link, "../../../../etc/passwd")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "evil.zip").write_bytes(buffer.getvalue())
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    before = all_files(tmp_path)
    code, out, _ = run(capsys, "--source", tmp_path / "in" / "evil.zip", "--dest", tmp_path / "out" / "data")
    assert code == 0
    assert {f for f in all_files(tmp_path) - before if not f.startswith("out/data")} == {"out"}
    rejected = {r["source"]: r["reason"] for r in read_csv(tmp_path / "out" / "data" / data_split.REJECTED)}
    assert rejected == {
        f"evil.zip!{tmp_path}/outside/cat.100.jpg": "unsafe archive entry: absolute path",
        "evil.zip!../cat.101.jpg": "unsafe archive entry: '..' in path",
        "evil.zip!train/../../dog.102.jpg": "unsafe archive entry: '..' in path",
        "evil.zip!train/cat.103.jpg": "unsafe archive entry: symbolic link",
    }
    assert "4 unsafe archive entry" in out
    assert len(read_csv(tmp_path / "out" / "data" / data_split.MANIFEST)) == 6


# ---------------------------------------------------------------- any classes, any names


FLOWERS = {"daisy": 10, "roses": 12, "sunflowers": 7, "tulips": 9}  # different sizes, so stratifying shows


def flower_files() -> dict[str, bytes]:
    """A class-folder download with its classes at three depths, one inside a nested zip, beside a
    license, a split-named folder over a class and an image in a test/ folder, which has no class."""
    images = {name: [jpeg(3000 + 100 * k + i) for i in range(n)] for k, (name, n) in enumerate(FLOWERS.items())}
    return {
        **{f"flowers/daisy/{i}.jpg": data for i, data in enumerate(images["daisy"])},
        **{f"flowers/train/roses/{i}.jpg": data for i, data in enumerate(images["roses"])},
        **{f"flowers/more/tulips/{i}.jpg": data for i, data in enumerate(images["tulips"])},
        "flowers/extra.zip": zip_bytes({f"sunflowers/{i}.jpg": data for i, data in enumerate(images["sunflowers"])}),
        "flowers/test/unknown.jpg": jpeg(2999),
        "flowers/LICENSE.txt": b"CC-BY",
    }


def test_class_folders_at_any_depth_in_a_folder_or_a_zip_give_stratified_splits_of_every_class(tmp_path, capsys):
    folder = write_files(tmp_path / "download", flower_files()) / "flowers"
    (tmp_path / "flowers.zip").write_bytes(zip_bytes(flower_files()))
    results = {}
    for source in (folder, tmp_path / "flowers.zip"):
        dest = tmp_path / f"out-{source.name}"
        code, out, _ = run(capsys, "--source", source, "--dest", dest)
        assert code == 0
        assert json.loads((dest / data_split.SPLIT_JSON).read_text())["classes"] == sorted(FLOWERS)
        for split in ("train", "validation", "test"):
            assert sorted(p.name for p in (dest / split).iterdir()) == sorted(FLOWERS)
        rows = read_csv(dest / data_split.MANIFEST)
        assert all(row["path"].split("/")[1] == row["label"] for row in rows)
        counts = Counter((r["label"], r["split"]) for r in rows)
        for name, n in FLOWERS.items():  # round(20%) and round(10%) of each class, and at least one
            assert counts[name, "validation"] == max(1, round(0.2 * n)) and counts[name, "test"] == max(1, round(0.1 * n))
            assert counts[name, "train"] == n - counts[name, "validation"] - counts[name, "test"]
            assert re.search(rf"^{name}\s+{counts[name, 'train']}\s+{counts[name, 'validation']}\s+"
                             rf"{counts[name, 'test']}$", out, re.M)
        assert_no_image_in_two_splits(dest)
        assert "of 4 classes" in out and "ignored: 1 unlabelled images, 1 non-image files" in out
        assert not re.search(r"\b(cats?|dogs?)\b", out, re.I)
        results[source.name] = {(r["path"], r["split"], r["sha256"]) for r in rows}
    assert results["flowers"] == results["flowers.zip"]  # extracted or not, the same split


def test_a_class_with_too_few_images_is_refused_in_one_line(tmp_path, capsys):
    files = {f"photos/{name}/{i}.jpg": jpeg(100 * k + i) for k, name in enumerate(("owls", "hawks")) for i in range(6)}
    files |= {"photos/wrens/0.jpg": jpeg(900), "photos/wrens/1.jpg": jpeg(901), "photos/wrens/2.jpg": jpeg(900),
              "photos/wrens/3.jpg": b"not a picture"}  # 4 files, 2 different usable images
    source = write_files(tmp_path / "in", files) / "photos"
    code, out, err = run(capsys, "--source", source, "--dest", tmp_path / "data")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.strip() == ("data_split.py: error: too few images to split: wrens/ has 2; each class needs at least 3 "
                           "different usable images (copies of one count once), one for each of train/, validation/ "
                           "and test/")
    assert not (tmp_path / "data").exists()
    code, out, _ = run(capsys, "--source", source, "--dest", tmp_path / "data", "--test-fraction", 0)  # 2 splits: enough
    assert code == 0
    wrens = {r["source"].split("/")[-1]: r["split"] for r in read_csv(tmp_path / "data" / data_split.MANIFEST)
             if r["label"] == "wrens"}
    assert wrens["0.jpg"] == wrens["2.jpg"] != wrens["1.jpg"]  # copies of one image stay together


@pytest.mark.parametrize("case", ["one-class", "no-class", "case-clash"])
def test_a_source_without_two_classes_is_refused_in_one_line(tmp_path, capsys, case):
    files = {
        "one-class": {f"flowers/daisy/{i}.jpg": jpeg(i) for i in range(5)},
        "no-class": {f"train/{i}.jpg": jpeg(i) for i in range(5)},  # a split's folder, and no class below it
        "case-clash": {f"flowers/{name}/{i}.jpg": jpeg(10 * k + i) for k, name in enumerate(("Roses", "roses"))
                       for i in range(4)},
    }[case]
    (tmp_path / "in.zip").write_bytes(zip_bytes(files))
    code, _, err = run(capsys, "--source", tmp_path / "in.zip", "--dest", tmp_path / "data")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert {"one-class": f"only one class in {tmp_path / 'in.zip'} (daisy/): a classifier needs two or more",
            "no-class": "no images in class folders",
            "case-clash": "class folders Roses and roses differ only in case"}[case] in err
    assert not re.search(r"\b(cats?|dogs?)\b", err, re.I) and not (tmp_path / "data").exists()


# ---------------------------------------------------------------- bad and special images


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, without the pixels: a cheap decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_bad_files_are_rejected_with_their_reason(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 20_000)  # so that a 30 kB file is "too large" to read
    bad = {
        "cat.90.jpg": b"",
        "cat.91.jpg": jpeg(91, size=32)[:-300],
        "dog.92.jpg": b"This is not a picture, just text named like one.\n",
        "dog.93.png": png_header(100_000, 100_000),  # above Pillow's own bomb limit
        "cat.94.png": png_header(10_000, 5_000),  # above MAX_PIXELS only
        "dog.95.jpg": bytes(30_000),
        "cat.96.jpg": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\n",  # EPS would start Ghostscript
    }
    source = write_files(tmp_path / "train", kaggle_images(3) | bad)
    code, out, _ = run(capsys, "--source", source, "--dest", tmp_path / "data")
    assert code == 0
    reasons = {r["source"]: r["reason"] for r in read_csv(tmp_path / "data" / data_split.REJECTED)}
    assert reasons["train/cat.90.jpg"] == "empty file"
    assert reasons["train/cat.91.jpg"].startswith("corrupt image")
    assert reasons["train/dog.92.jpg"] == "not an image"
    assert reasons["train/dog.93.png"].startswith("too many pixels")
    assert reasons["train/cat.94.png"] == "too many pixels: 10000x5000 (limit 40000000)"
    assert reasons["train/dog.95.jpg"] == "file too large: 30000 bytes"
    assert reasons["train/cat.96.jpg"] == "not an image"
    assert "rejected 7: 1 corrupt image, 1 empty file, 1 file too large, 2 not an image, 2 too many pixels" in out
    assert len(read_csv(tmp_path / "data" / data_split.MANIFEST)) == 6


def upright_test_image() -> Image.Image:
    """24 wide, 40 tall: red top half, blue bottom half, so any rotation or flip shows."""
    image = Image.new("RGB", (24, 40), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 24, 20))
    return image


def encoded(image: Image.Image, fmt: str = "JPEG", **save) -> bytes:
    """image saved in fmt, as bytes."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def rotated_for_exif(orientation: int) -> bytes:
    """The upright test image stored sideways, with the EXIF tag that tells viewers to turn it back."""
    stored = upright_test_image().transpose(Image.Transpose.ROTATE_90 if orientation == 6 else Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION] = orientation
    return encoded(stored, quality=95, exif=exif.tobytes())


def test_special_images_reach_tensorflow_upright_rgb(tmp_path, capsys):
    import tensorflow as tf
    special = {
        "cat.50.jpg": encoded(upright_test_image().convert("L")),  # grayscale
        "cat.51.jpg": encoded(upright_test_image().convert("CMYK")),
        "dog.52.jpg": encoded(upright_test_image(), "PNG"),  # PNG data under a .jpg name
        "dog.53.jpg": rotated_for_exif(6),
        "cat.54.jpg": rotated_for_exif(8),
        "dog.55.jpg": encoded(upright_test_image(), quality=95),  # plain RGB JPEG: copied as is
    }
    source = write_files(tmp_path / "train", kaggle_images(3) | special)
    code, out, _ = run(capsys, "--source", source, "--dest", tmp_path / "data")
    assert code == 0 and "converted to upright RGB PNG: 5" in out
    rows = {r["source"].split("/")[-1]: r for r in read_csv(tmp_path / "data" / data_split.MANIFEST)}
    for name in special:
        path = tmp_path / "data" / rows[name]["path"]
        assert path.suffix == (".jpg" if name == "dog.55.jpg" else ".png")
        pixels = tf.io.decode_image(path.read_bytes(), expand_animations=False).numpy().astype(int)
        assert pixels.shape == (40, 24, 3), name
        top, bottom = pixels[:15].mean(axis=(0, 1)), pixels[25:].mean(axis=(0, 1))
        if name != "cat.50.jpg":  # grayscale has no colour left, only brightness
            assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60, name
        else:
            assert abs(top.mean() - bottom.mean()) > 20
    assert (tmp_path / "data" / rows["dog.55.jpg"]["path"]).read_bytes() == special["dog.55.jpg"]
    dataset = tf.keras.utils.image_dataset_from_directory(tmp_path / "data" / "train", image_size=(40, 24), shuffle=False)
    assert dataset.class_names == list(data_split.CLASS_DIRS)
    assert next(iter(dataset))[0].shape[-1] == 3


def test_archive_members_and_files_with_colliding_names_each_get_their_own_file(tmp_path, capsys):
    webp = encoded(upright_test_image(), "WEBP")
    png = encoded(upright_test_image().convert("L"), "PNG")
    listed = [
        ("train/cat.1.jpg", jpeg(1)), ("train/cat.1.jpg", jpeg(2)),  # one name, other bytes
        ("train/cat.1.jpg", jpeg(1)),  # an exact copy of the first member, name and bytes
        ("other/cat.1.jpg", jpeg(3)), ("train/CAT.1.jpg", jpeg(4)), ("train/cat.1-2.jpg", jpeg(5)),
        ("train/cat.7.png", png), ("train/cat.7.webp", webp),  # both stored as cat.7.png
        *((f"train/dog.{i}.jpg", jpeg(200 + i)) for i in range(4)),
    ]
    archive = zip_bytes(listed)
    (tmp_path / "train.zip").write_bytes(archive)
    code, out, _ = run(capsys, "--source", tmp_path / "train.zip", "--dest", tmp_path / "data")
    assert code == 0
    rows = read_csv(tmp_path / "data" / data_split.MANIFEST)
    written = sorted(p.relative_to(tmp_path / "data").as_posix() for p in (tmp_path / "data").glob("*/*/*"))
    assert len(rows) == len(listed) and written == sorted(r["path"] for r in rows)  # one file and one row per member
    seen, by_source = {}, {}
    for name, data in members(archive):
        seen[name] = seen.get(name, 0) + 1
        by_source[f"train.zip!{name}" + (f"#{seen[name]}" if seen[name] > 1 else "")] = data
    assert {r["source"] for r in rows} == set(by_source)
    for row in rows:
        data = by_source[row["source"]]
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
        if row["path"].endswith(".jpg"):
            assert (tmp_path / "data" / row["path"]).read_bytes() == data
    assert "archive members named like an earlier member of their archive: 2" in out
    twins = [r for r in rows if r["source"] in ("train.zip!train/cat.1.jpg", "train.zip!train/cat.1.jpg#3")]
    assert twins[0]["split"] == twins[1]["split"] and twins[0]["path"] != twins[1]["path"]


def test_every_image_written_is_read_by_training(tmp_path, capsys):
    from hparam_sweep import pipeline
    picture = upright_test_image()
    files = {f"cat.{i}{suffix}": encoded(picture.rotate(i * 7), fmt) for i, (suffix, fmt) in enumerate([
        (".jpg", "JPEG"), (".jpeg", "JPEG"), (".JPG", "JPEG"), (".png", "PNG"), (".bmp", "BMP"), (".gif", "GIF"),
        (".webp", "WEBP"), (".tif", "TIFF"), (".tiff", "TIFF"), (".webp", "JPEG"), (".png", "JPEG")])}
    assert {Path(name).suffix.lower() for name in files} == set(common.IMAGE_SUFFIXES)
    source = write_files(tmp_path / "train", files | {f"dog.{i}.jpg": jpeg(i) for i in range(11)})
    assert run(capsys, "--source", source, "--dest", tmp_path / "data")[0] == 0
    rows = read_csv(tmp_path / "data" / data_split.MANIFEST)
    assert len(rows) == 22
    for split in data_split.SPLITS:
        written = [p for p in (tmp_path / "data" / split).rglob("*") if p.is_file()]
        assert all(p.suffix.lower() in common.IMAGE_SUFFIXES for p in written)
        assert len(pipeline.load_split(tmp_path / "data" / split, 16)) == len(written) == sum(r["split"] == split for r in rows)


def test_training_reads_every_image_suffix_in_any_case_and_nothing_else(tmp_path):
    from hparam_sweep import pipeline
    png = encoded(upright_test_image(), "PNG")
    candidates = {*common.IMAGE_SUFFIXES, ".JPG", ".jpe", ".svg", ".heic", ".txt"}
    write_files(tmp_path / "x", {f"cats/a{suffix}": png for suffix in candidates} | {"cats/._a.jpg": b"fork"})
    listed, _ = pipeline.split_files(tmp_path / "x")
    assert sorted(p.suffix for p in listed) == sorted([*common.IMAGE_SUFFIXES, ".JPG"])  # no hidden file


@pytest.mark.parametrize("how", ["crc", "encrypted", "deflate"])
def test_unreadable_archive_members_are_rejected_and_the_run_goes_on(tmp_path, capsys, how):
    good = {f"train/{name}": data for name, data in kaggle_images(3).items()}
    stored = how == "crc"  # so that a flipped byte reaches the CRC check instead of the decompressor
    archive = zip_bytes(good | {"train/cat.90.jpg": jpeg(90)}, zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED)
    (tmp_path / "train.zip").write_bytes(damaged(archive, "train/cat.90.jpg", how))
    code, out, _ = run(capsys, "--source", tmp_path / "train.zip", "--dest", tmp_path / "data")
    assert code == 0 and "rejected 1: 1 unreadable" in out
    reasons = {r["source"]: r["reason"] for r in read_csv(tmp_path / "data" / data_split.REJECTED)}
    expected = {"crc": "Bad CRC-32", "encrypted": "encrypted", "deflate": "invalid block type"}[how]
    assert list(reasons) == ["train.zip!train/cat.90.jpg"] and expected in reasons["train.zip!train/cat.90.jpg"]
    assert reasons["train.zip!train/cat.90.jpg"].startswith("unreadable: ")
    assert len(read_csv(tmp_path / "data" / data_split.MANIFEST)) == 6


def test_nested_zips_are_read_to_max_depth_and_broken_ones_reported(tmp_path, capsys):
    assert data_split.MAX_ZIP_DEPTH == 3
    level4 = zip_bytes({"cat.40.jpg": jpeg(40)})
    level3 = zip_bytes({"cat.30.jpg": jpeg(30), "d4.zip": level4})
    level2 = zip_bytes({"cat.20.jpg": jpeg(20), "d3.zip": level3})
    truncated = zip_bytes({"dog.50.jpg": jpeg(50)})
    outer = {**{f"train/{n}": d for n, d in kaggle_images(3).items()}, "d2.zip": level2,
             "garbage.zip": b"PK\x03\x04 not really a zip", "truncated.zip": truncated[:len(truncated) // 2]}
    (tmp_path / "all.zip").write_bytes(zip_bytes(outer))
    code, out, err = run(capsys, "--source", tmp_path / "all.zip", "--dest", tmp_path / "data")
    assert code == 0 and "Traceback" not in out + err
    sources = {r["source"] for r in read_csv(tmp_path / "data" / data_split.MANIFEST)}
    assert {"all.zip!d2.zip!cat.20.jpg", "all.zip!d2.zip!d3.zip!cat.30.jpg"} <= sources  # depth 2 and 3
    assert len(sources) == 8
    reasons = {r["source"]: r["reason"] for r in read_csv(tmp_path / "data" / data_split.REJECTED)}
    assert reasons.pop("all.zip!d2.zip!d3.zip!d4.zip") == "archive nested deeper than 3 levels"
    assert sorted(reasons) == ["all.zip!garbage.zip", "all.zip!truncated.zip"]
    assert all(reason.startswith("unreadable archive: ") for reason in reasons.values())


def test_workers_flag_sets_the_threads_and_not_the_result(tmp_path, capsys, monkeypatch):
    source = write_files(tmp_path / "train", kaggle_images(6) | {"cat.9.jpg": encoded(upright_test_image(), "PNG")})
    check_entry, threads, calls, lock = splitting.check_entry, {}, [], threading.Lock()
    barrier = threading.Barrier(3)

    def recording(*args):
        with lock:
            threads.setdefault(workers, set()).add(threading.get_ident())
            calls.append(workers)
            first = calls.count(workers) <= 3
        if workers == 3 and first:
            barrier.wait(timeout=60)  # passes only once 3 threads check images at the same time
        return check_entry(*args)

    monkeypatch.setattr(splitting, "check_entry", recording)
    for workers in (1, 3):
        code, out, _ = run(capsys, "--source", source, "--dest", tmp_path / f"out-{workers}", "--workers", workers)
        assert code == 0 and f"with {workers} threads" in out
    assert len(threads[1]) == 1 and threading.get_ident() not in threads[1]
    assert len(threads[3]) == 3 and not barrier.broken
    assert (tmp_path / "out-1" / data_split.MANIFEST).read_bytes() == (tmp_path / "out-3" / data_split.MANIFEST).read_bytes()
    assert checksums(tmp_path / "out-1" / "train") == {k.replace("out-3", "out-1"): v
                                                      for k, v in checksums(tmp_path / "out-3" / "train").items()}


def exif_with_a_mistyped_tag() -> bytes:
    """An EXIF-rotated JPEG whose tag 0x0107 (a number) holds text: it decodes, but rotating it fails."""
    exif = Image.Exif()
    exif[images.EXIF_ORIENTATION] = 6
    exif[0x010F] = "Canon"  # Make, text
    raw = exif.tobytes().replace(b"\x01\x0f\x00\x02", b"\x01\x07\x00\x02")  # now tag 0x0107, still text
    return encoded(upright_test_image(), exif=raw)


def test_exif_that_cannot_be_applied_is_a_corrupt_image(tmp_path, capsys):
    source = write_files(tmp_path / "train", kaggle_images(3) | {"cat.9.jpg": exif_with_a_mistyped_tag()})
    code, out, _ = run(capsys, "--source", source, "--dest", tmp_path / "data")
    assert code == 0 and "rejected 1: 1 corrupt image" in out
    reasons = {r["source"]: r["reason"] for r in read_csv(tmp_path / "data" / data_split.REJECTED)}
    assert reasons["train/cat.9.jpg"].startswith("corrupt image: ")


@pytest.mark.parametrize("error", [MemoryError, TypeError])
def test_memory_errors_and_bugs_stop_the_run_instead_of_rejecting_images(tmp_path, capsys, monkeypatch, error):
    source = write_files(tmp_path / "train", kaggle_images(3))

    def failing_load(self):
        raise error("not the file's fault")

    monkeypatch.setattr(ImageFile.ImageFile, "load", failing_load)
    with pytest.raises(error):
        data_split.main(["--source", str(source), "--dest", str(tmp_path / "data")])
    assert not (tmp_path / "data" / data_split.REJECTED).exists()


@pytest.mark.parametrize("where", ["copy", "convert", "nested-zip", "manifest"])
def test_a_failed_write_into_dest_stops_the_run_in_one_line(tmp_path, capsys, monkeypatch, where):
    images = kaggle_images(3) | {"cat.9.jpg": encoded(upright_test_image(), "PNG")}
    (tmp_path / "all.zip").write_bytes(zip_bytes({"train.zip": zip_bytes(images)}))
    source = write_files(tmp_path / "train", images) if where != "nested-zip" else tmp_path / "all.zip"
    dest = tmp_path / "data"

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(dest / "manifest.csv") if where == "manifest" else None)

    target = {"copy": (data_split.Path, "write_bytes"), "convert": (Image.Image, "save"),
              "nested-zip": (tempfile.SpooledTemporaryFile, "write"),
              "manifest": (splitting, "write_csv")}[where]
    monkeypatch.setattr(*target, disk_full)
    code, out, err = run(capsys, "--source", source, "--dest", dest)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("data_split.py: error: cannot write the split: No space left on device")
    assert "rejected" not in out and not (dest / data_split.SPLIT_JSON).exists()
    monkeypatch.undo()
    code, out, _ = run(capsys, "--source", source, "--dest", dest)  # once there is space again: no --force needed
    assert code == 0 and len(read_csv(dest / data_split.MANIFEST)) == 7



# ---------------------------------------------------------------- the split itself


def test_same_seed_same_split_whatever_the_file_order_other_seed_differs(tmp_path, capsys, monkeypatch):
    images = kaggle_images(20)
    # Same-named files in two folders and in one archive: which gets "cat.3-2.jpg" or "NAME#2" could
    # follow the listing order, so the listing order is reversed below.
    files = {f"train/{name}": data for name, data in images.items()} | {
        "train/extra/cat.3.jpg": jpeg(903), "train/extra/dog.4.jpg": jpeg(904),
        "train/more.zip": zip_bytes([("cat.5.jpg", jpeg(905)), ("cat.5.jpg", jpeg(915)), ("dog.6.jpg", jpeg(906))]),
    }
    source = write_files(tmp_path / "in", files) / "train"
    assert run(capsys, "--source", source, "--dest", tmp_path / "out-a", "--seed", 3)[0] == 0
    list_in_reverse(monkeypatch)
    assert run(capsys, "--source", source, "--dest", tmp_path / "out-b", "--seed", 3)[0] == 0
    monkeypatch.undo()
    assert (tmp_path / "out-a" / data_split.MANIFEST).read_bytes() == (tmp_path / "out-b" / data_split.MANIFEST).read_bytes()
    assert checksums(tmp_path / "out-a" / "train") == {k.replace("out-b", "out-a"): v
                                                      for k, v in checksums(tmp_path / "out-b" / "train").items()}
    sources = {r["source"] for r in read_csv(tmp_path / "out-a" / data_split.MANIFEST)}
    assert {"train/more.zip!cat.5.jpg", "train/more.zip!cat.5.jpg#2", "train/extra/cat.3.jpg"} <= sources
    assert run(capsys, "--source", source, "--dest", tmp_path / "out-c", "--seed", 4)[0] == 0
    assert assignment(tmp_path / "out-a") != assignment(tmp_path / "out-c")
    validation = [r for r in read_csv(tmp_path / "out-c" / data_split.MANIFEST) if r["split"] == "validation"]
    assert len(validation) == 9  # 20% of 23 cats and 22 dogs


def test_byte_identical_duplicates_never_span_both_splits(tmp_path, capsys):
    images = kaggle_images(8)
    for original in ("cat.0.jpg", "cat.1.jpg", "dog.0.jpg", "dog.1.jpg"):  # three copies each, other names
        label, number, _ = original.split(".")
        for copy in range(3):
            images[f"{label}.{100 + 10 * int(number) + copy}.jpg"] = images[original]
    images["dog.999.jpg"] = images["cat.7.jpg"]  # the same picture under both labels
    source = write_files(tmp_path / "train", images)
    for seed in range(6):
        dest = tmp_path / f"out-{seed}"
        assert run(capsys, "--source", source, "--dest", dest, "--seed", seed)[0] == 0
        splits_of = {}
        for row in read_csv(dest / data_split.MANIFEST):
            splits_of.setdefault(row["sha256"], set()).add(row["split"])
        assert all(len(s) == 1 for s in splits_of.values())
        assert len(read_csv(dest / data_split.MANIFEST)) == len(images) - 2
    reasons = {r["source"]: r["reason"] for r in read_csv(tmp_path / "out-0" / data_split.REJECTED)}
    assert reasons == {"train/cat.7.jpg": "same image labelled both cat and dog",
                       "train/dog.999.jpg": "same image labelled both cat and dog"}


def test_two_classes_are_split_exactly_as_before():
    """split_groups generalised to any number of classes gives a cats-vs-dogs source the assignment of
    the two-class version, pinned here on content hashes that no image encoder can change."""

    def kept(label, n):
        return [splitting.Checked(Entry(f"{label}.{i}.jpg", f"{label}.{i}.jpg", label, bytes),
                                  hashlib.sha256(f"{label}.{i}".encode()).hexdigest()) for i in range(n)]

    images = kept("cat", 20) + kept("dog", 15)

    def held_out(seed, val_fraction, test_fraction):
        split = data_split.split_groups(images, val_fraction, seed, test_fraction)
        return {name: sorted(c.entry.name for c in images if split[c.sha256] == name) for name in ("validation", "test")}

    assert held_out(42, 0.2, 0.1) == {
        "validation": ["cat.1.jpg", "cat.11.jpg", "cat.6.jpg", "cat.9.jpg", "dog.2.jpg", "dog.4.jpg", "dog.5.jpg"],
        "test": ["cat.19.jpg", "cat.5.jpg", "dog.0.jpg", "dog.6.jpg"]}
    assert held_out(7, 0.25, 0) == {
        "validation": ["cat.16.jpg", "cat.19.jpg", "cat.5.jpg", "cat.6.jpg", "cat.9.jpg",
                       "dog.13.jpg", "dog.14.jpg", "dog.3.jpg", "dog.9.jpg"], "test": []}


def two_sizes(cats: int, dogs: int) -> dict[str, bytes]:
    """cat.N.jpg / dog.N.jpg with other counts per class, all different bytes."""
    return {f"cat.{i}.jpg": jpeg(i) for i in range(cats)} | {f"dog.{i}.jpg": jpeg(1000 + i) for i in range(dogs)}


def test_three_way_split_is_stratified_complete_leak_free_and_in_the_manifest(tmp_path, capsys):
    images = two_sizes(20, 30)
    source = write_files(tmp_path / "train", images)
    dest = tmp_path / "data"
    code, out, _ = run(capsys, "--source", source, "--dest", dest, "--val-fraction", 0.2, "--test-fraction", 0.3)
    assert code == 0
    rows = read_csv(dest / data_split.MANIFEST)
    assert sorted(r["source"] for r in rows) == sorted(f"train/{name}" for name in images)  # each image once
    assert sorted(p.relative_to(dest).as_posix() for p in dest.glob("*/*/*")) == [r["path"] for r in rows]
    for row in rows:  # each file in the folder of the split manifest.csv gives it
        assert row["path"] == f"{row['split']}/{row['label']}s/{row['source'].split('/')[-1]}"
    # Per class, round(fraction x its images) in validation and in test, the rest in train.
    assert Counter((r["label"], r["split"]) for r in rows) == {
        ("cat", "validation"): 4, ("cat", "test"): 6, ("cat", "train"): 10,
        ("dog", "validation"): 6, ("dog", "test"): 9, ("dog", "train"): 15}
    assert_no_image_in_two_splits(dest)
    assert re.search(r"^cats\s+10\s+4\s+6$", out, re.M) and re.search(r"^dogs\s+15\s+6\s+9$", out, re.M)
    assert json.loads((dest / data_split.SPLIT_JSON).read_text())["test_fraction"] == 0.3


def test_byte_identical_duplicates_stay_in_one_of_three_splits(tmp_path, capsys):
    images = kaggle_images(10)
    for label in ("cat", "dog"):
        for i in range(6):  # six pictures of each class get one to three more copies under other names
            for copy in range(1 + i % 3):
                images[f"{label}.{100 + 10 * i + copy}.jpg"] = images[f"{label}.{i}.jpg"]
    source = write_files(tmp_path / "train", images)
    hosts = set()  # the splits that got a picture with copies, over all seeds
    for seed in range(4):
        dest = tmp_path / f"out-{seed}"
        assert run(capsys, "--source", source, "--dest", dest, "--seed", seed,
                   "--val-fraction", 0.25, "--test-fraction", 0.25)[0] == 0
        rows = read_csv(dest / data_split.MANIFEST)
        assert len(rows) == len(images)  # every copy kept
        assert_no_image_in_two_splits(dest)
        copies = Counter(r["sha256"] for r in rows)
        hosts |= {r["split"] for r in rows if copies[r["sha256"]] > 1}
    assert hosts == {"train", "validation", "test"}  # so copies could have straddled any two splits


def test_three_way_split_same_seed_same_split_whatever_the_file_order_other_seed_differs(tmp_path, capsys, monkeypatch):
    files = {f"train/{name}": data for name, data in kaggle_images(15).items()}
    files |= {"train/more/cat.3.jpg": jpeg(903), "train/more.zip": zip_bytes({"dog.4.jpg": jpeg(904)})}
    source = write_files(tmp_path / "in", files) / "train"
    fractions = ("--val-fraction", 0.2, "--test-fraction", 0.2)
    assert run(capsys, "--source", source, "--dest", tmp_path / "out-a", "--seed", 3, *fractions)[0] == 0
    list_in_reverse(monkeypatch)
    assert run(capsys, "--source", source, "--dest", tmp_path / "out-b", "--seed", 3, *fractions)[0] == 0
    monkeypatch.undo()
    a, b = (tmp_path / "out-a" / data_split.MANIFEST).read_bytes(), (tmp_path / "out-b" / data_split.MANIFEST).read_bytes()
    assert a == b and b"\ntest/" in a
    assert hashes_on_disk(tmp_path / "out-a") == hashes_on_disk(tmp_path / "out-b")
    assert run(capsys, "--source", source, "--dest", tmp_path / "out-c", "--seed", 4, *fractions)[0] == 0
    a, c = hashes_on_disk(tmp_path / "out-a"), hashes_on_disk(tmp_path / "out-c")
    assert a["test"] != c["test"] and a["validation"] != c["validation"]
    assert len(c["test"]) == len(a["test"]) == 6  # round(20% of 16) of each class


def test_test_fraction_0_writes_no_test_folder_and_a_test_split_comes_out_of_train(tmp_path, capsys):
    source = write_files(tmp_path / "train", kaggle_images(10))
    code, out, _ = run(capsys, "--source", source, "--dest", tmp_path / "two", "--test-fraction", 0)
    assert code == 0 and "no test split" in out and re.search(r"^\s+train\s+validation$", out, re.M)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        [*data_split.SPLITS, data_split.MANIFEST, data_split.REJECTED, data_split.SPLIT_JSON])
    two = read_csv(tmp_path / "two" / data_split.MANIFEST)
    assert {r["split"] for r in two} == set(data_split.SPLITS) and len(two) == 20
    assert json.loads((tmp_path / "two" / data_split.SPLIT_JSON).read_text())["test_fraction"] == 0
    assert run(capsys, "--source", source, "--dest", tmp_path / "three")[0] == 0  # the default: a test split
    three = read_csv(tmp_path / "three" / data_split.MANIFEST)

    def of(rows, split):
        return {r["source"] for r in rows if r["split"] == split}

    assert of(three, "validation") == of(two, "validation")  # same seed: validation/ does not move
    assert of(three, "test") and of(three, "test") <= of(two, "train")


def test_a_split_made_before_test_fraction_is_kept_until_force(tmp_path, capsys):
    source = write_files(tmp_path / "train", kaggle_images(10))
    dest = tmp_path / "data"
    assert run(capsys, "--source", source, "--dest", dest, "--test-fraction", 0)[0] == 0
    record = json.loads((dest / data_split.SPLIT_JSON).read_text())
    del record["test_fraction"]  # as the version without --test-fraction wrote it
    (dest / data_split.SPLIT_JSON).write_text(json.dumps(record))
    before = checksums(dest)
    code, out, _ = run(capsys, "--source", source, "--dest", dest, "--test-fraction", 0)
    assert code == 0 and "nothing to do" in out  # it is a --test-fraction 0 split

    code, _, err = run(capsys, "--source", source, "--dest", dest)  # the same command as then: now a test split
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--test-fraction 0 there, 0.1 now" in err and "add --force" in err and "--test-fraction 0 to keep it" in err
    assert checksums(dest) == before

    write_files(dest, {"test/mine.txt": b"not the tool's"})
    code, _, err = run(capsys, "--source", source, "--dest", dest, "--force")
    assert code == 2 and "test/ folder that this tool did not write" in err
    assert checksums(dest) == before | {"data/test/mine.txt": hashlib.sha256(b"not the tool's").hexdigest()}
    (dest / "test" / "mine.txt").unlink()
    (dest / "test").rmdir()
    assert run(capsys, "--source", source, "--dest", dest, "--force")[0] == 0
    assert {r["split"] for r in read_csv(dest / data_split.MANIFEST)} == {"train", "validation", "test"}
    assert run(capsys, "--source", source, "--dest", dest, "--test-fraction", 0, "--force")[0] == 0  # and back
    after = checksums(dest)
    assert not (dest / "test").exists() and after.pop("data/split.json") != before.pop("data/split.json")
    assert after == before  # the very same two-way split, now with test_fraction 0 in split.json


def test_source_is_never_changed(tmp_path, capsys):
    images = kaggle_images(4) | {"cat.9.jpg": encoded(upright_test_image().convert("L")), "dog.9.jpg": b""}
    folder = write_files(tmp_path / "train", images)
    archive = tmp_path / "train.zip"
    archive.write_bytes(zip_bytes({f"train/{name}": data for name, data in images.items()}))
    before = checksums(folder) | checksums(archive)
    assert run(capsys, "--source", folder, "--dest", tmp_path / "d1")[0] == 0
    assert run(capsys, "--source", folder, "--dest", tmp_path / "d1", "--link", "--force")[0] == 0
    assert run(capsys, "--source", folder, "--dest", tmp_path / "d1", "--seed", 5, "--force")[0] == 0
    assert run(capsys, "--source", archive, "--dest", tmp_path / "d2", "--link")[0] == 0
    assert checksums(folder) | checksums(archive) == before


# ---------------------------------------------------------------- reruns, --force, --link


def test_rerun_is_a_noop_other_arguments_need_force(tmp_path, capsys):
    source = write_files(tmp_path / "train", kaggle_images())
    dest = tmp_path / "data"
    assert run(capsys, "--source", source, "--dest", dest)[0] == 0
    stamp = (dest / data_split.MANIFEST).stat().st_mtime_ns
    code, out, _ = run(capsys, "--source", source, "--dest", dest)
    assert code == 0 and "nothing to do" in out
    assert (dest / data_split.MANIFEST).stat().st_mtime_ns == stamp

    code, _, err = run(capsys, "--source", source, "--dest", dest, "--seed", 7)
    assert code == 2 and "--force" in err and len(err.strip().splitlines()) == 1
    assert json.loads((dest / data_split.SPLIT_JSON).read_text())["seed"] == 42

    (dest / "notes.txt").write_text("mine")
    assert run(capsys, "--source", source, "--dest", dest, "--seed", 7, "--force")[0] == 0
    assert json.loads((dest / data_split.SPLIT_JSON).read_text())["seed"] == 7
    assert (dest / "notes.txt").read_text() == "mine"

    (source / "cat.77.jpg").write_bytes(jpeg(77))  # a changed source is not "the same arguments"
    code, _, err = run(capsys, "--source", source, "--dest", dest, "--seed", 7)
    assert code == 2 and "--force" in err


def test_force_refuses_a_folder_this_tool_did_not_write(tmp_path, capsys):
    source = write_files(tmp_path / "train", kaggle_images())
    dest = write_files(tmp_path / "mine", {"train/cats/precious.jpg": b"keep", "notes.txt": b"keep"})
    code, _, err = run(capsys, "--source", source, "--dest", dest, "--force")
    assert code == 2 and "not a split this tool wrote" in err
    assert all_files(dest) == {"train", "train/cats", "train/cats/precious.jpg", "notes.txt"}


def test_a_crash_mid_split_leaves_dest_incomplete_and_the_rerun_rebuilds(tmp_path, capsys, monkeypatch):
    source = write_files(tmp_path / "train", kaggle_images())
    dest = tmp_path / "data"
    assert run(capsys, "--source", source, "--dest", dest)[0] == 0

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(data_split.Path, "replace", crash)  # dies just before split.json lands
    with pytest.raises(KeyboardInterrupt):
        data_split.main(["--source", str(source), "--dest", str(dest), "--seed", "1", "--force"])
    monkeypatch.undo()
    assert not (dest / data_split.SPLIT_JSON).exists()  # so it does not look complete
    code, out, _ = run(capsys, "--source", source, "--dest", dest, "--seed", "1")  # no --force needed
    assert code == 0 and "interrupted" in out
    assert json.loads((dest / data_split.SPLIT_JSON).read_text())["seed"] == 1
    assert len(read_csv(dest / data_split.MANIFEST)) == 12


def test_link_hard_links_and_falls_back_to_copying(tmp_path, capsys, monkeypatch):
    images = kaggle_images(3) | {"cat.9.jpg": encoded(upright_test_image().convert("L"))}
    source = write_files(tmp_path / "train", images)
    assert run(capsys, "--source", source, "--dest", tmp_path / "linked", "--link")[0] == 0
    for row in read_csv(tmp_path / "linked" / data_split.MANIFEST):
        out, original = tmp_path / "linked" / row["path"], tmp_path / row["source"]
        converted = row["source"].endswith("cat.9.jpg")
        assert out.samefile(original) != converted
        assert (out.stat().st_nlink > 1) != converted

    def no_link(src, dst, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(data_split.os, "link", no_link)
    code, out, _ = run(capsys, "--source", source, "--dest", tmp_path / "copied", "--link")
    assert code == 0 and "copied them" in out
    for row in read_csv(tmp_path / "copied" / data_split.MANIFEST):
        assert (tmp_path / "copied" / row["path"]).stat().st_nlink == 1


# ---------------------------------------------------------------- user mistakes


@pytest.mark.parametrize("case", ["missing", "not-zip", "fraction-0", "fraction-1.5", "fraction-text", "inside",
                                  "same", "source-in-dest", "unlabelled", "one-class", "bad-zip-name",
                                  "test-fraction-1", "test-fraction-negative", "fractions-sum-1"])
def test_user_mistakes_exit_2_with_one_line(tmp_path, capsys, case):
    source = write_files(tmp_path / "train", kaggle_images(2))
    (tmp_path / "notes.txt").write_text("hello")
    write_files(tmp_path / "test1", {f"{i}.jpg": jpeg(i) for i in range(3)})
    write_files(tmp_path / "cats-only", {f"cat.{i}.jpg": jpeg(i) for i in range(3)})
    (tmp_path / "fake.zip").write_text("not a zip")
    args = {
        "missing": ["--source", tmp_path / "nowhere"],
        "not-zip": ["--source", tmp_path / "notes.txt"],
        "fraction-0": ["--source", source, "--val-fraction", "0"],
        "fraction-1.5": ["--source", source, "--val-fraction", "1.5"],
        "fraction-text": ["--source", source, "--val-fraction", "half"],
        "inside": ["--source", source, "--dest", source / "data"],
        "same": ["--source", source, "--dest", source],
        "source-in-dest": ["--source", source, "--dest", tmp_path],
        "unlabelled": ["--source", tmp_path / "test1", "--dest", tmp_path / "out"],
        "one-class": ["--source", tmp_path / "cats-only", "--dest", tmp_path / "out"],
        "bad-zip-name": ["--source", tmp_path / "fake.zip", "--dest", tmp_path / "out"],
        "test-fraction-1": ["--source", source, "--test-fraction", "1"],
        "test-fraction-negative": ["--source", source, "--test-fraction", "-0.1"],
        "fractions-sum-1": ["--source", source, "--val-fraction", "0.6", "--test-fraction", "0.4"],
    }[case]
    code, out, err = run(capsys, *args)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("data_split.py: error:")
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() and not (source / "data").exists()
    assert not (tmp_path / "data").exists()  # nor the default --dest, in the working folder


def test_command_line_errors_and_help_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "data_split.py"), "--source", str(tmp_path / "nowhere")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"data_split.py: error: source {tmp_path / 'nowhere'} does not exist"]
    help_text = subprocess.run([sys.executable, str(ROOT / "data_split.py"), "--help"],
                               capture_output=True, text=True, cwd=tmp_path).stdout
    for flag in ("--source", "--dest", "--val-fraction", "--test-fraction", "--seed", "--link", "--force", "--demo",
                 "--workers"):
        assert flag in help_text


def test_a_reader_that_stops_reading_stops_only_the_printing(tmp_path):
    """`data_split.py ... | head -1`: stdout is a pipe nobody reads (closed before the run starts),
    so every line hits a broken pipe; the split still completes and exits 0, without a traceback."""
    source = write_files(tmp_path / "train", kaggle_images(3))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, str(Path(data_split.__file__)), "--source", str(source),
                               "--dest", str(tmp_path / "data")], stdout=write_end, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(write_end)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert (tmp_path / "data" / data_split.SPLIT_JSON).exists()
