"""Classify photos with the model a sweep chose: cat or dog, and how sure.

    python predict.py ~/Pictures/pets                       # every image under the folder, recursively
    python predict.py photo.jpg other.png --model logs/demo/best_model.keras
    python predict.py data/test --csv predictions.csv       # one row per image instead of a line
    python predict.py --export serving/model                # best_model.keras as a TensorFlow SavedModel

The model is the logdir's best_model.keras (results.csv's rank 1) unless --model names another.
Each image is decoded and resized exactly as training decoded it (TensorFlow's bilinear resize
without antialiasing, not PIL's), so the model sees the pixels it was trained on. A file that is
not an image, or a broken one, is listed with the reason and skipped. Exit status: 0 when at least
one image was classified, 1 when none could be, 2 for a usage error.
"""

import argparse
import csv
import sys
from pathlib import Path

from hparam_sweep import console
from hparam_sweep.common import IMAGE_SUFFIXES, LABELS, UsageError

DEFAULT_LOGDIR = Path("logs/hparam_tuning")
BATCH_SIZE = 64  # images decoded and classified at a time


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Classify images as cat or dog with a sweep's chosen model.")
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="image files, or folders searched recursively")
    parser.add_argument("--logdir", type=Path, default=DEFAULT_LOGDIR,
                        help="the sweep whose best_model.keras to use (default: %(default)s)")
    parser.add_argument("--model", type=Path, help="a .keras model file instead (default: LOGDIR/best_model.keras)")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write path,label,p_cat,p_dog rows to FILE "
                        "instead of a line per image")
    parser.add_argument("--export", type=Path, metavar="DIR", help="also export the model to DIR as a TensorFlow "
                        "SavedModel for serving (its `serve` signature takes uint8 images)")
    parser.add_argument("--verbose", action="store_true", help="TensorFlow's own log lines as well, unfiltered")
    args = parser.parse_args(argv)
    if not args.paths and not args.export:
        parser.error("give the images to classify (files or folders), or --export DIR")
    return args


def image_files(paths):
    """(files to classify, [(path, reason) skipped]): files as given; folders walked recursively,
    hidden files left out, files without an image suffix skipped with the reason."""
    files, skipped = [], []
    for path in paths:
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if p.is_file()):
                if any(part.startswith(".") for part in found.relative_to(path).parts):
                    continue
                if found.suffix.lower() in IMAGE_SUFFIXES:
                    files.append(found)
                else:
                    skipped.append((found, f"not an image file ({found.suffix or 'no suffix'})"))
        elif path.is_file():
            files.append(path)
        else:
            skipped.append((path, "no such file or folder"))
    return files, skipped


def classify(model, files, image_size, skipped):
    """[(path, [P(cat), P(dog)])] of the files that decode, BATCH_SIZE at a time; the others are
    appended to `skipped` with the reason."""
    import numpy as np
    import tensorflow as tf

    from hparam_sweep import pipeline

    results = []
    with console.Progress("classifying", len(files), stream=sys.stderr) as progress:
        for start in range(0, len(files), BATCH_SIZE):
            decoded = []
            for path in files[start:start + BATCH_SIZE]:
                try:
                    decoded.append((path, pipeline.decode_file(path, image_size)))
                except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, OSError) as e:
                    reason = getattr(e, "message", str(e)).splitlines()[0]
                    skipped.append((path, f"cannot be decoded ({reason})"))
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
        return 2


def run(args):
    import keras

    model_path = args.model or args.logdir / "best_model.keras"
    if not model_path.is_file():
        raise UsageError(f"no model at {model_path}: run train.py first, or name one with --model FILE")
    model = keras.models.load_model(model_path)
    if args.export:
        model.export(str(args.export), format="tf_saved_model", verbose=False)
        print(f"Exported {model_path} to {args.export} (TensorFlow SavedModel, signature `serve`).", file=sys.stderr)
    if not args.paths:
        return 0
    files, skipped = image_files(args.paths)
    results = classify(model, files, model.input_shape[1], skipped)
    if args.csv:
        with args.csv.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", *(f"p_{label}" for label in LABELS)])
            for path, p in results:
                writer.writerow([path, LABELS[p.index(max(p))], *p])
    else:
        for path, p in results:
            print(f"{LABELS[p.index(max(p))]} {max(p):.2f}  {path}")
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"{len(results)} image(s) classified, {len(skipped)} skipped"
          + (f"; rows in {args.csv}" if args.csv else ""), file=sys.stderr)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
