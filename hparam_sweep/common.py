"""Names and small file helpers shared by the data side (data_split.py, demo.py) and the trainer."""

import json
import os
from pathlib import Path

LABELS = ("cat", "dog")  # as in Kaggle's cat.N.jpg / dog.N.jpg names
CLASS_DIRS = tuple(f"{label}s" for label in LABELS)  # folder names under each split; Keras labels them 0, 1 in this order
# The suffixes keras.utils.image_dataset_from_directory reads (its ALLOWLIST_FORMATS, checked by a test):
# data_split.py stores every image under one of them, so training sees every image it kept.
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
SPLITS = ("train", "validation")
TEST_SPLIT = "test"  # data_split.py --test-fraction's held-out folder beside SPLITS; no trial reads it
BACKUP_MINUTES = 5.0  # a trial backs up this often (and at each epoch end): a kill loses at most this much training
MANIFEST = "manifest.csv"  # data_split.py's record of every kept image; its hash fingerprints the data

FINISHED = ("success", "failure")  # a trial's end statuses in trial.json; other statuses mean it may go on


class UsageError(Exception):
    """A mistake the user can fix; the entry points print it as one line and exit with code 2."""


class RunStopped(Exception):
    """A fault outside the trials (a full disk, a lock the file system refuses) that stops the run
    without failing a trial: train.py says it in one line; a rerun continues where it stopped."""


def read_json(path: Path) -> dict | None:
    """The JSON object in path, or None if it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, obj) -> None:
    """Write JSON atomically, so a kill never leaves half a file behind."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)

