"""Check a download's images and split them, per class, into train/, validation/ and test/ folders.

    python data_split.py --source ~/Downloads/flower_photos               # a folder per class: daisy/, roses/...
    python data_split.py --source ~/Downloads/dataset.zip                 # class folders in a zip, at any depth
    python data_split.py --source ~/Downloads/dogs-vs-cats.zip            # Kaggle competition zip
    python data_split.py --source ~/Downloads/train.zip --dest data       # or its train.zip alone
    python data_split.py --source ~/Downloads/PetImages --link            # Microsoft's set, hard-linked
    python data_split.py --source train/ --val-fraction 0.1 --seed 7 --force   # re-split DEST
    python data_split.py --source train/ --test-fraction 0                # train/ and validation/ only
    python data_split.py --demo data/demo                                 # synthetic set, no download

Writes the layout `keras.utils.image_dataset_from_directory` reads, a folder per class:

    DEST/train/CLASS/...  DEST/validation/CLASS/...  DEST/test/CLASS/...
    DEST/manifest.csv   one row per kept image: path,source,label,split,sha256
    DEST/rejected.csv   one row per skipped file: source,reason
    DEST/split.json     the arguments, a fingerprint of SOURCE and the classes; written last, so its
                        presence means the split is complete

An image's class is the name of the folder that directly holds it (`flowers/daisy/1.jpg`: daisy), or
cat / dog for Kaggle's flat `cat.12.jpg` / `dog.7.jpg` names; folders named like splits (train/,
val/, test/) are no class. Cats and dogs (Kaggle's names, PetImages' Cat/ and Dog/) go into cats/
and dogs/. Every class needs at least one different image per split.
Zip archives, nested ones included, are read in place; nothing is written outside DEST and
SOURCE is never modified. Every image is fully decoded first; broken ones are listed in
rejected.csv. Plain RGB JPEGs are copied byte for byte (or hard-linked with --link); any other
good image (grayscale, CMYK, 16-bit, transparent, PNG data, EXIF-rotated, WebP, TIFF) is stored as
hparam_sweep/images.py makes it upright RGB, in a lossless PNG: training and predict.py decode
with that same module, so a raw photo given to predict.py gives the pixels training saw. Byte-identical
duplicates stay in one split. Archive members that share a name are all kept, the second one as
`NAME#2` in manifest.csv. A failed write into DEST (disk full, permissions) stops the run.
The work is hparam_sweep/sources.py (listing, classes) and hparam_sweep/splitting.py (the rest).

Why test/: the grid keeps the trial with the best validation accuracy out of many, so that figure
is biased upward; test/, which no choice looks at and which is scored once for the chosen model, is
the honest estimate of how well it classifies new pictures. --test-fraction 0 leaves it out.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from hparam_sweep.common import UsageError
from hparam_sweep.splitting import DEFAULT_SEED, DEFAULT_TEST_FRACTION, DEFAULT_VAL_FRACTION, Config, prepare_demo, run_split

# Re-exported for the code that takes them from here (train.py, bench/, tests): the work is in the package.
from hparam_sweep.common import CLASS_DIRS, MANIFEST, SPLITS, TEST_SPLIT  # noqa: F401
from hparam_sweep.sources import MAX_ZIP_DEPTH, SplitError  # noqa: F401
from hparam_sweep.splitting import REJECTED, SPLIT_JSON, STAGING, split_groups  # noqa: F401


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, as for every other user mistake here."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), not {text}")
    return value


def fraction_or_zero(text: str) -> float:
    """argparse type: 0, or a number strictly between 0 and 1."""
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be 0 or between 0 and 1 (exclusive), not {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs a whole number of at least 1, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line flags, each with its help text and default."""
    parser = Parser(prog="data_split.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--source", type=Path, metavar="PATH",
                      help="the images, a folder per class named after it (at any depth, in a folder or a "
                           "zip), or Kaggle's dogs-vs-cats.zip, train.zip, an extracted train/ folder, "
                           "kagglecatsanddogs_*.zip or PetImages/; only read, never changed")
    what.add_argument("--demo", type=Path, metavar="DEST",
                      help="instead of --source: draw a synthetic cats-vs-dogs set next to DEST "
                           "(in DEST-source/) and split it into DEST with the default validation fraction "
                           "and seed, and no test split")
    parser.add_argument("--dest", type=Path, default=Path("data"), metavar="PATH",
                        help="output folder for train/, validation/, test/ and the CSV/JSON records "
                             "(default: %(default)s)")
    parser.add_argument("--val-fraction", type=fraction, default=DEFAULT_VAL_FRACTION, metavar="F",
                        help="share of each class's images that goes to validation/, which the grid scores "
                             "every trial on (default: %(default)s)")
    parser.add_argument("--test-fraction", type=fraction_or_zero, default=DEFAULT_TEST_FRACTION, metavar="F",
                        help="share of each class's images that goes to test/; train/ gets what validation/ "
                             "and test/ leave (default: %(default)s; 70%% train with the default "
                             "--val-fraction). The grid keeps the best of many trials by validation accuracy, "
                             "so that figure is biased upward; test/, which no choice sees and which is scored "
                             "once for the chosen model, is the honest estimate. 0: no test/ folder, train/ "
                             "and validation/ only, as before")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, metavar="N",
                        help="which split: the same seed and images give the same split on any machine (default: %(default)s)")
    parser.add_argument("--link", action="store_true",
                        help="hard-link unchanged images from a SOURCE folder instead of copying them "
                             "(same filesystem only; copies otherwise)")
    parser.add_argument("--force", action="store_true",
                        help="rebuild a DEST that holds a split made with other arguments "
                             "(removes only what this tool wrote there)")
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1, metavar="N",
                        help="threads that read, hash and decode images (default: %(default)s, the CPU count)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code (0 done or nothing to do, 2 user mistake)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a flag error argparse already printed
        return stop.code
    try:
        if args.demo is not None:
            prepare_demo(args.demo)
            return 0
        config = Config(source=args.source.expanduser().resolve(), dest=args.dest.expanduser().resolve(),
                        val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                        link=args.link, force=args.force, workers=args.workers)
        return run_split(config, log=say)
    except UsageError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2


def say(line: str):
    """print, except that a reader who stops reading (`data_split.py ... | head`) stops only the
    printing: the split goes on to the end, and its exit code says how that went."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        # Python's own recipe: what is still buffered, and every later line, goes to /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


if __name__ == "__main__":
    raise SystemExit(main())
