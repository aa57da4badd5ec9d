"""demo.py: a synthetic set that data_split.py splits like real data, with learnable classes."""

from pathlib import Path

import numpy as np
from conftest import snapshot
from PIL import Image
from test_data_split import read_csv, run

import data_split


def silhouettes(folder: Path, label: str) -> np.ndarray:
    """Per image, how far each pixel is from the image's border colour: where the animal is."""
    images = np.stack([np.asarray(Image.open(p).convert("L"), float) for p in sorted(folder.glob(f"{label}.*.jpg"))])
    border = np.median(np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1), axis=1)
    return np.abs(images - border[:, None, None])


def test_demo_set_is_split_like_real_data_and_its_classes_differ(tmp_path, capsys):
    dest = tmp_path / "demo"
    assert data_split.prepare_demo(dest, images_per_class=40, size=32) == dest.resolve()
    raw = tmp_path / "demo-source" / "train"
    assert sorted(p.name for p in raw.iterdir())[:2] == ["cat.0.jpg", "cat.1.jpg"]
    assert Image.open(raw / "dog.3.jpg").size == (32, 32) and Image.open(raw / "dog.3.jpg").mode == "RGB"
    rows = read_csv(dest / data_split.MANIFEST)
    assert len(rows) == 80 and sum(r["split"] == "validation" for r in rows) == 16
    assert sum(r["split"] == data_split.TEST_SPLIT for r in rows) == 8  # so the demo ends with a test score
    before = snapshot(tmp_path)
    assert data_split.prepare_demo(dest, images_per_class=40, size=32) == dest.resolve()
    assert "nothing to do" in capsys.readouterr().out
    assert snapshot(tmp_path) == before  # a repeat call draws and copies nothing

    cats, dogs = silhouettes(raw, "cat"), silhouettes(raw, "dog")
    assert np.abs(cats.mean(0) - dogs.mean(0)).mean() > 5  # mean shapes differ by > 5 of 255 grey levels
    # Learnable from the pixels: class mean shapes fitted on half the images classify the other half.
    centroids = cats[::2].mean(0), dogs[::2].mean(0)
    held_out = [(image, label) for label, images in enumerate((cats[1::2], dogs[1::2])) for image in images]
    correct = [np.argmin([((image - c) ** 2).sum() for c in centroids]) == label for image, label in held_out]
    assert np.mean(correct) >= 0.8

    assert run(capsys, "--demo", dest)[0] == 0  # other arguments (200 images of 64 px): redrawn and re-split
    assert len(read_csv(dest / data_split.MANIFEST)) == 400
