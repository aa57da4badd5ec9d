"""Classify photos with the model a sweep chose: which class, and how sure.

    python predict.py ~/Pictures/pets                       # every image under the folder, recursively
    python predict.py photo.jpg other.png --model logs/demo/best_model.keras
    python predict.py data/test --csv predictions.csv       # one row per image instead of a line
    python predict.py --export serving/model                # best_model.keras as a TensorFlow SavedModel

The model is the logdir's best_model.keras (results.csv's rank 1) unless --model names another;
the class names are the ones kept inside it (the class folders it trained on; cat and dog for
Kaggle's cats/ and dogs/, and for a 2-class model from before they were kept).
Each image is decoded exactly as training decoded it (hparam_sweep/images.py: EXIF orientation
applied, CMYK, 16-bit and transparent images made RGB as data_split.py makes them, TensorFlow's
bilinear resize), so the model sees the pixels it was trained on. Files that are not images, broken
or unreadable ones, and anything that is not a regular file are listed with the reason and skipped.

Exit status: 0 when at least one image was classified; 1 when none could be; 2 for a bad argument
(said before any work); 3 when --csv or --export could not be written (a full disk, say).
"""

import argparse
import csv
import os
import stat
import sys
from pathlib import Path

from hparam_sweep import console
from hparam_sweep.common import IMAGE_SUFFIXES, LABELS, RunStopped, UsageError, class_labels, kept_classes, replaced, why

DEFAULT_LOGDIR = Path("logs/hparam_tuning")
BATCH_SIZE = 64  # images decoded and classified at a time
EXIT_NONE_CLASSIFIED, EXIT_USAGE, EXIT_NOT_WRITTEN = 1, 2, 3


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Classify images with a sweep's chosen model: which class, how sure.")
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="image files, or folders searched recursively")
    parser.add_argument("--logdir", type=Path, default=DEFAULT_LOGDIR,
                        help="the sweep whose best_model.keras to use (default: %(default)s)")
    parser.add_argument("--model", type=Path, help="a .keras model file instead (default: LOGDIR/best_model.keras)")
    parser.add_argument("--image-size", type=int, metavar="N", help="the side images are resized to, for a model "
                        "that takes any size (default: the model's own input size)")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write path,label and one probability column "
                        "per class (p_cat,p_dog,...) to FILE instead of a line per image")
    parser.add_argument("--export", type=Path, metavar="DIR", help="also export the model to DIR as a TensorFlow "
                        "SavedModel for serving (its `serve` signature takes uint8 images)")
    parser.add_argument("--verbose", action="store_true", help="TensorFlow's own log lines as well, unfiltered")
    args = parser.parse_args(argv)
    if not args.paths and not args.export:
        parser.error("give the images to classify (files or folders), or --export DIR")
    if args.image_size is not None and args.image_size < 1:
        parser.error("--image-size must be a whole number of at least 1")
    return args


def shown(path):
    """A path as it can be printed: a file name that is not valid UTF-8 with its odd bytes as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def not_regular(path):
    """Why path cannot be classified although it exists (or is a dangling link), or "" for a regular file."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "broken symbolic link" if path.is_symlink() else "no such file or folder"
    except OSError as e:
        return f"cannot be read ({e.strerror})"
    if stat.S_ISREG(mode):
        return ""
    kind = {stat.S_ISFIFO: "a named pipe", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a device",
            stat.S_ISBLK: "a device"}
    return f"not a regular file ({next((name for test, name in kind.items() if test(mode)), 'special file')})"


def image_files(paths):
    """(files to classify, [(path, reason) skipped]): files as given; folders walked recursively
    (symbolic links to folders not followed), hidden files left out, files without an image suffix
    and anything that is not a regular file skipped with the reason."""
    files, skipped = [], []
    for path in paths:
        if not path.is_dir():
            reason = not_regular(path)
            (skipped.append((path, reason)) if reason else files.append(path))
            continue
        walked = []
        for root, folders, names in os.walk(path, onerror=lambda e: skipped.append(
                (Path(e.filename), f"cannot be listed ({e.strerror})"))):
            folders[:] = sorted(f for f in folders if not f.startswith("."))
            walked += [Path(root, name) for name in names if not name.startswith(".")]
        for found in sorted(walked):
            if found.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append((found, f"not an image file ({found.suffix or 'no suffix'})"))
            elif reason := not_regular(found):
                skipped.append((found, reason))
            else:
                files.append(found)
    return files, skipped


def input_size(model, image_size):
    """(height, width) the model takes its images at: its own, or --image-size for a model that takes any."""
    shape = model.input_shape if isinstance(model.input_shape, tuple) else None
    if not shape or len(shape) != 4 or shape[-1] != 3:
        raise UsageError(f"the model takes inputs of shape {model.input_shape}, not RGB images (batch, height, "
                         "width, 3): give a model trained by train.py")
    if image_size:
        return image_size, image_size
    if None in shape[1:3]:
        raise UsageError("the model takes images of any size: give --image-size N, the size it was trained at")
    return shape[1], shape[2]


def classify(model, files, size, skipped):
    """[(path, [P(class) for each class])] of the files that decode, BATCH_SIZE at a time; the others are
    appended to `skipped` with the reason."""
    import numpy as np

    from hparam_sweep import images

    results = []
    with console.Progress("classifying", len(files), stream=sys.stderr) as progress:
        for start in range(0, len(files), BATCH_SIZE):
            decoded = []
            for path in files[start:start + BATCH_SIZE]:
                try:
                    decoded.append((path, images.load(path, size)))
                except images.BadImage as e:
                    skipped.append((path, str(e)))
                except OSError as e:
                    skipped.append((path, f"cannot be read ({e.strerror or e})"))
            if decoded:
                probabilities = model.predict(np.stack([image for _, image in decoded]), verbose=0)
                results += [(path, p.tolist()) for (path, _), p in zip(decoded, probabilities)]
            progress.update(min(start + BATCH_SIZE, len(files)))
    return results


def main(argv=None):
    args = parse_args(argv)
    try:
        with console.tensorflow_kept_quiet(args.verbose):
            return run(args)
    except UsageError as e:
        print(f"predict.py: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RunStopped as e:  # an output (--csv, --export) that could not be written
        print(f"predict.py: {e}", file=sys.stderr)
        return EXIT_NOT_WRITTEN


def check_output(path, what, folder=False):
    """Refuse, before any work, an output path that cannot be written."""
    if not path.parent.is_dir():
        raise UsageError(f"{what} {path}: the folder {path.parent} does not exist")
    if path.is_dir() and not (folder and not any(path.iterdir())):
        raise UsageError(f"{what} {path} is " + ("a folder that is not empty" if folder else "a folder") +
                         ": name a new " + ("folder" if folder else "file"))
    if path.exists() and not path.is_dir() and folder:
        raise UsageError(f"{what} {path} is a file: name a new folder")
    if not os.access(path.parent, os.W_OK):
        raise UsageError(f"{what} {path}: the folder {path.parent} is not writable")


def load_model(path):
    """The Keras model in path; a file that is not one is a usage error."""
    import keras

    if not path.is_file():
        raise UsageError(f"no model at {path}: run train.py first, or name one with --model FILE")
    try:
        return keras.models.load_model(path)
    except Exception as e:  # noqa: BLE001 - Keras raises many kinds (ValueError, OSError, zip errors) for a bad file
        raise UsageError(f"{path} is not a Keras model file ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def labels_of(model, model_path):
    """The name of each of the model's outputs: the classes kept in its file (common.keep_classes);
    without them, cat and dog for 2 outputs (this tool's models from before), else their numbers."""
    classes = kept_classes(model_path)
    shape = getattr(model, "output_shape", None)  # a subclassed model may not know it
    outputs = shape[-1] if isinstance(shape, tuple) else None
    if classes is not None and len(classes) == outputs:
        return class_labels(classes)
    return LABELS if outputs == len(LABELS) else tuple(str(i) for i in range(outputs or 0))


def run(args):
    for path, what, folder in ((args.csv, "--csv", False), (args.export, "--export", True)):
        if path:
            check_output(path, what, folder)
    model_path = args.model or args.logdir / "best_model.keras"
    model = load_model(model_path)
    size = input_size(model, args.image_size) if args.paths else None
    if args.export:
        try:
            model.export(str(args.export), format="tf_saved_model", verbose=False)
        except Exception as e:  # noqa: BLE001 - TensorFlow's write errors are not OSError
            raise RunStopped(f"cannot export to {args.export} ({why(e)})") from None
        print(f"Exported {model_path} to {args.export} (TensorFlow SavedModel, signature `serve`).", file=sys.stderr)
    if not args.paths:
        return 0
    files, skipped = image_files(args.paths)
    labels = labels_of(model, model_path)
    results = classify(model, files, size, skipped)
    if args.csv:
        write_csv(args.csv, results, labels)
    else:
        for path, p in results:
            print(f"{labels[p.index(max(p))]} {max(p):.2f}  {shown(path)}")
    for path, reason in skipped:
        print(f"skipped {shown(path)}: {reason}", file=sys.stderr)
    print(f"{len(results)} image(s) classified, {len(skipped)} skipped"
          + (f"; rows in {args.csv}" if args.csv else ""), file=sys.stderr)
    return 0 if results else EXIT_NONE_CLASSIFIED


def write_csv(path, results, labels):
    """The rows, path, label and a probability per class, written whole or not at all
    (common.replaced: a temporary file renamed into place)."""
    with replaced(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", *(f"p_{label}" for label in labels)])
        for file, p in results:
            writer.writerow([shown(file), labels[p.index(max(p))], *p])

if __name__ == "__main__":
    sys.exit(main())
