"""Names and small file helpers shared by the data side (data_split.py, demo.py) and the trainer."""

import contextlib
import errno
import json
import os
import re
import zipfile
from pathlib import Path

LABELS = ("cat", "dog")  # as in Kaggle's cat.N.jpg / dog.N.jpg names
# Their folder names under each split, data_split.py's for Kaggle's images and --demo's; any other
# data set brings its own class folders (pipeline.check_data), labelled 0, 1, ... in sorted order.
CLASS_DIRS = tuple(f"{label}s" for label in LABELS)
CLASSES_ENTRY = "classes.json"  # inside a kept .keras file (a zip): the class names its outputs are (keep_classes)
# The image files data_split.py reads, training decodes and predict.py classifies (any case);
# images.DECODE_FORMATS are what their contents may be.
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".webp", ".tif", ".tiff")
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


def joined(names):
    """Names as a sentence lists them: "cats and dogs", "birds, cats and dogs" ("" for none)."""
    names = list(names)
    return " and ".join(filter(None, (", ".join(names[:-1]), names[-1]))) if names else ""


def class_labels(classes):
    """What predict.py and the test score call each class: its folder name, but cat and dog for
    Kaggle's cats/ and dogs/, as this tool always has."""
    return LABELS if tuple(classes) == CLASS_DIRS else tuple(classes)


def keep_classes(model_file, classes):
    """Write the class names, in the order of the model's outputs, into a saved .keras file (a zip:
    keras.models.load_model reads its own entries and leaves this one be), so that the file alone
    says what it predicts, wherever it is copied."""
    with zipfile.ZipFile(model_file, "a") as archive:
        archive.writestr(CLASSES_ENTRY, json.dumps({"classes": list(classes)}, indent=2) + "\n")


def kept_classes(model_file):
    """The class names kept in a .keras file (keep_classes), or None: a file from before they were
    kept (its 2 outputs are cats and dogs) or saved by something else."""
    try:
        with zipfile.ZipFile(model_file) as archive:
            return tuple(json.loads(archive.read(CLASSES_ENTRY))["classes"])
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile):
        return None


def why(error):
    """The cause of a failure in a few words: the OS's own ("No space left on device"), also out of a
    TensorFlow error, whose message's first line reads "{{function_node ...}} [PATH; ]CAUSE [Op:NAME]"."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    line = (str(getattr(error, "message", error)).splitlines() or [""])[0]
    line = re.sub(r"\{\{.*?\}\}\s*|\s*\[Op:\w+\].*$", "", line)
    return line.rpartition("; ")[2].strip() or type(error).__name__


@contextlib.contextmanager
def writing(said, *errors):
    """A write into the logdir, `said` the message's start ("cannot write PATH"). Its failure (no
    space, a write refused, a read-only file system) is not a trial's fault: it raises RunStopped,
    so that the run stops in one line and no trial is failed for it. errors: what else than
    OSError the block raises when a write fails (TensorFlow's tf.errors.OpError at its own files)."""
    try:
        yield
    except (OSError, *errors) as e:
        raise RunStopped(f"{said} ({why(e)})") from None


def made(folder):
    """Create folder and its parents where missing (RunStopped where that fails, see `writing`)."""
    with writing(f"cannot write {folder}"):
        folder.mkdir(parents=True, exist_ok=True)


def sync(path):
    """fsync a file or a folder (after a rename in it); file systems that cannot sync a folder are let be."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def replaced(path, said=None):
    """Write path atomically and durably: the block writes the temporary path it is given (beside
    path, with its suffix: Keras wants .keras), which is then fsynced and renamed over path, and the
    folder fsynced, so that neither a kill nor a power cut leaves half a file under path's name. A
    failed write removes the temporary file and raises RunStopped (`writing`, said: its message's
    start, "cannot write PATH" by default)."""
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    with writing(said or f"cannot write {path}"):
        try:
            yield tmp
            sync(tmp)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):  # a read-only file system may refuse even this
                tmp.unlink(missing_ok=True)
            raise
        sync(path.parent)


def read_json(path: Path) -> dict | None:
    """The JSON object in path, or None if it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_json(path: Path, obj) -> None:
    """Write JSON atomically and durably (`replaced`): a failed write raises RunStopped."""
    with replaced(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")

