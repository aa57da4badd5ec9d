"""A synthetic cats-vs-dogs set for `python train.py --demo`: no download needed.

    python data_split.py --demo data/demo      # draw the images (here) and split them (data_split.py)

Cats have a round face with pointed ears, dogs a long face, a muzzle and floppy ears, drawn at
random places, sizes and colours on cluttered backgrounds, so that the model has to learn
shapes and a small grid shows real differences between trials.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from hparam_sweep.common import LABELS, UsageError, read_json

DEMO_VERSION = 1  # bump when the drawing changes, so cached demo images are redrawn


def polygon(cx: float, cy: float, rx: float, ry: float, tilt: float, n: int = 32) -> list[tuple[float, float]]:
    """Points of an ellipse rotated by tilt radians (PIL cannot draw rotated ellipses)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    return list(zip(cx + x * np.cos(tilt) - y * np.sin(tilt), cy + x * np.sin(tilt) + y * np.cos(tilt)))


def contrasting(rng: random.Random, background: tuple[int, ...]) -> tuple[int, ...]:
    """A random colour clearly brighter or darker than background, so the outline is visible."""
    while True:
        colour = tuple(rng.randrange(256) for _ in range(3))
        if abs(sum(colour) - sum(background)) > 180:
            return colour


def shade(colour: tuple[int, ...], factor: float) -> tuple[int, ...]:
    """colour scaled towards black (factor < 1) or white (factor > 1)."""
    if factor <= 1:
        return tuple(int(c * factor) for c in colour)
    return tuple(int(255 - (255 - c) / factor) for c in colour)


def draw_pet(label: str, rng: random.Random, size: int) -> Image.Image:
    """One synthetic RGB image: a cat (round face, pointed ears on top) or a dog (long face, muzzle,
    floppy dark ears at the sides), at a random place, scale and colour on a noisy, cluttered background."""
    s = 2 * size  # drawn at twice the size and shrunk, for smooth edges
    background = tuple(rng.randrange(256) for _ in range(3))
    image = Image.new("RGB", (s, s), background)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randrange(1, 5)):  # clutter, so that the pet, not the corners, tells the class
        x, y, w = rng.uniform(0, s), rng.uniform(0, s), rng.uniform(0.1, 0.4) * s
        draw.rectangle((x - w, y - w / 3, x + w, y + w / 3), fill=shade(background, rng.uniform(0.75, 1.3)))
    fur = contrasting(rng, background)
    r = rng.uniform(0.22, 0.28) * s
    cx, cy = rng.uniform(0.42, 0.58) * s, rng.uniform(0.55, 0.6) * s
    dot = (20, 20, 20) if sum(fur) > 300 else (235, 235, 235)  # eyes and nose, visible on any fur
    if label == "cat":
        for side in (-1, 1):
            tip = rng.uniform(0.2, 0.26) * np.pi
            reach = rng.uniform(1.8, 2.0) * r
            for scale, colour in ((1.0, fur), (0.75, shade(fur, 1.8))):  # the ear and its paler inside
                base = [(cx + side * r * np.sin(a), cy - r * np.cos(a)) for a in (0.06 * np.pi, 0.38 * np.pi)]
                apex = (cx + side * reach * scale * np.sin(tip), cy - reach * scale * np.cos(tip))
                draw.polygon([base[0], apex, base[1]], fill=colour)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fur)
        eye_y, eye_dx, nose_y, nose_r = cy - 0.2 * r, 0.42 * r, cy + 0.25 * r, 0.1 * r
    else:
        rx, ry = rng.uniform(0.65, 0.75) * r, rng.uniform(1.2, 1.35) * r
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=fur)
        draw.ellipse((cx - 0.6 * rx, cy + 0.1 * ry, cx + 0.6 * rx, cy + 0.95 * ry), fill=shade(fur, 1.6))  # muzzle
        ear = shade(fur, rng.uniform(0.35, 0.6))
        for side in (-1, 1):
            tilt = side * rng.uniform(0.1, 0.3)
            draw.polygon(polygon(cx + side * 1.1 * rx, cy + 0.05 * ry, 0.32 * r, 1.05 * r, tilt), fill=ear)
        eye_y, eye_dx, nose_y, nose_r = cy - 0.35 * ry, 0.4 * rx, cy + 0.35 * ry, 0.2 * r
    for side in (-1, 1):
        x = cx + side * eye_dx
        draw.ellipse((x - 0.1 * r, eye_y - 0.1 * r, x + 0.1 * r, eye_y + 0.1 * r), fill=dot)
    draw.ellipse((cx - nose_r, nose_y - nose_r * 0.7, cx + nose_r, nose_y + nose_r * 0.7), fill=dot)
    small = image.resize((size, size), Image.LANCZOS).filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.6)))
    noise = np.random.default_rng(rng.getrandbits(64)).normal(0, 10, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(small) + noise, 0, 255).astype(np.uint8))


def draw_demo_images(folder: Path, images_per_class: int, size: int, seed: int):
    """Write cat.N.jpg and dog.N.jpg into folder, the flat layout of Kaggle's train.zip."""
    for label in LABELS:
        for i in range(images_per_class):
            rng = random.Random(f"{seed}:{label}:{i}")  # string seeds hash the same on every machine
            draw_pet(label, rng, size).save(folder / f"{label}.{i}.jpg", quality=90)


def draw_demo_source(dest: Path, images_per_class: int = 200, size: int = 64, seed: int = 0) -> Path:
    """Draw a synthetic cats-vs-dogs set next to dest, in `<dest>-source/train/` (Kaggle's flat
    layout, outside what data_split.py --force clears); return that folder, for data_split.py to split.

    The images are drawn only when missing or made with other arguments, so a repeat call is a
    quick no-op.
    """
    dest = Path(dest).expanduser().resolve()
    raw = dest.parent / f"{dest.name}-source"
    wanted = {"version": DEMO_VERSION, "images_per_class": images_per_class, "size": size, "seed": seed}
    if read_json(raw / "demo.json") != wanted:
        if raw.exists() and read_json(raw / "demo.json") is None:
            raise UsageError(f"{raw} exists and is not a demo image folder: move it away")
        shutil.rmtree(raw, ignore_errors=True)
        partial = raw.with_name(raw.name + ".partial")  # renamed when complete: no half-drawn set
        shutil.rmtree(partial, ignore_errors=True)
        (partial / "train").mkdir(parents=True)
        draw_demo_images(partial / "train", images_per_class, size, seed)
        (partial / "demo.json").write_text(json.dumps(wanted) + "\n")
        partial.rename(raw)
    return raw / "train"
