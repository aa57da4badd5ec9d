"""Check the cats-vs-dogs images and split them into train/, validation/ and test/ folders.

    python data_split.py --source ~/Downloads/dogs-vs-cats.zip            # Kaggle competition zip
    python data_split.py --source ~/Downloads/train.zip --dest data       # or its train.zip alone
    python data_split.py --source ~/Downloads/PetImages --link            # Microsoft's set, hard-linked
    python data_split.py --source train/ --val-fraction 0.1 --seed 7 --force   # re-split DEST
    python data_split.py --source train/ --test-fraction 0                # train/ and validation/ only
    python data_split.py --demo data/demo                                 # synthetic set, no download

Writes the layout `keras.utils.image_dataset_from_directory` reads:

    DEST/train/{cats,dogs}/...  DEST/validation/{cats,dogs}/...  DEST/test/{cats,dogs}/...
    DEST/manifest.csv   one row per kept image: path,source,label,split,sha256
    DEST/rejected.csv   one row per skipped file: source,reason
    DEST/split.json     the arguments and a fingerprint of SOURCE; written last, so its
                        presence means the split is complete

Labels come from names: `cat.12.jpg` / `dog.7.jpg` or a `Cat/` / `Dog/` folder (any case).
Zip archives, nested ones included, are read in place; nothing is written outside DEST and
SOURCE is never modified. Every image is fully decoded first; broken ones are listed in
rejected.csv. Plain RGB JPEGs are copied byte for byte (or hard-linked with --link); any other
good image (grayscale, CMYK, 16-bit, transparent, PNG data, EXIF-rotated, WebP, TIFF) is stored as
hparam_sweep/images.py makes it upright RGB, in a lossless PNG: training and predict.py decode
with that same module, so a raw photo given to predict.py gives the pixels training saw. Byte-identical
duplicates stay in one split. Archive members that share a name are all kept, the second one as
`NAME#2` in manifest.csv. A failed write into DEST (disk full, permissions) stops the run.

Why test/: the grid keeps the trial with the best validation accuracy out of many, so that figure
is biased upward; test/, which no choice looks at and which is scored once for the chosen model, is
the honest estimate of how well it classifies new pictures. --test-fraction 0 leaves it out.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
import warnings
import zipfile
import zlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from hparam_sweep import console, images
from hparam_sweep.common import (
    CLASS_DIRS,
    IMAGE_SUFFIXES,
    LABELS,
    MANIFEST,
    SPLITS,
    TEST_SPLIT,
    UsageError,
    read_json,
)

REJECTED = "rejected.csv"
SPLIT_JSON = "split.json"
STAGING = ".split-tmp"  # built here first, moved into place at the end
# Bump when the output layout or the stored pixels change, so older splits are rebuilt. Not bumped
# for test/: a split with --test-fraction 0 is laid out as before, and split.json's test_fraction
# tells the others apart (a split.json without one is a two-way split, see needs_build).
# 2: 16-bit images scaled (they were clipped to white), transparent pixels on white (images.py).
FORMAT_VERSION = 2

DEFAULT_VAL_FRACTION = 0.2  # Keras' tutorial default; 5,000 validation images on the full set
# 2,500 test images on the full set: at ~90% accuracy its standard error is ~0.6 points, while train
# keeps 70% of the images.
DEFAULT_TEST_FRACTION = 0.1
DEFAULT_SEED = 42
MAX_ZIP_DEPTH = 3  # dogs-vs-cats.zip!train.zip is depth 2; deeper nesting is not a dataset
SPOOL_BYTES = 1 << 30  # nested zips up to this size are read in memory, larger ones spill into DEST
COPY_SUFFIXES = (".jpg", ".jpeg")  # output names of unconverted files, which are always JPEG data
# Reading an archive member: bad CRC (BadZipFile), encrypted or unsupported compression (RuntimeError),
# corrupt compressed data (zlib.error), truncated archive (EOFError), I/O errors (OSError).
BAD_MEMBER = (OSError, zipfile.BadZipFile, RuntimeError, EOFError, zlib.error)
FOLDER_LABELS = {name: label for label, folder in zip(LABELS, CLASS_DIRS) for name in (label, folder)}
NAME_LABEL = re.compile(rf"^({'|'.join(LABELS)})s?[._\- ]", re.IGNORECASE)  # cat.12.jpg, Dog_3.png


class SplitError(UsageError):
    """A user mistake or unusable input: main() prints the message on one line and exits 2."""


@dataclass(frozen=True)
class Config:
    """What one split run needs; built from the command line or by prepare_demo."""

    source: Path
    dest: Path
    val_fraction: float = DEFAULT_VAL_FRACTION
    test_fraction: float = DEFAULT_TEST_FRACTION  # 0: no test/ folder, the two-way split
    seed: int = DEFAULT_SEED
    link: bool = False
    force: bool = False
    workers: int = os.cpu_count() or 1

    @property
    def splits(self) -> tuple[str, ...]:
        """The split folders this run writes."""
        return (*SPLITS, TEST_SPLIT) if self.test_fraction else SPLITS

    def recorded(self, fingerprint: str) -> dict:
        """The settings split.json stores; a rerun with equal settings is a no-op."""
        return {
            "version": FORMAT_VERSION,
            "source": str(self.source),
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "seed": self.seed,
            "link": self.link,
            "source_fingerprint": fingerprint,
        }


@dataclass(frozen=True)
class Entry:
    """One labelled image file found in SOURCE, not read yet."""

    source: str  # e.g. "train/cat.1.jpg" or "dogs-vs-cats.zip!train.zip!train/cat.1.jpg"; unique
    name: str  # the file name, e.g. "cat.1.jpg": the output file is named after it
    label: str
    read: Callable[[], bytes]
    path: Path | None = None  # the file on disk, so --link can hard-link it


@dataclass(frozen=True)
class Checked:
    """The outcome of checking one entry: kept (staged file written) or rejected."""

    entry: Entry
    sha256: str = ""
    converted: bool = False
    staged: Path | None = None
    reject: str = ""  # "category" or "category: detail"
    linked: bool = False


@dataclass
class Scan:
    """Everything found while listing SOURCE."""

    entries: list[Entry] = field(default_factory=list)
    rejects: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    unlabelled: int = 0
    ignored: int = 0
    same_name: int = 0  # archive members named like an earlier member of the same archive


class DestWriteError(SplitError):
    """Writing into DEST failed (disk full, no permission): the run stops, DEST stays incomplete."""

    def __init__(self, error: OSError):
        where = f": {error.filename}" if error.filename else ""
        super().__init__(f"cannot write the split: {error.strerror or error}{where}; "
                         "fix that and rerun (DEST is left incomplete and will be rebuilt)")


# ---------------------------------------------------------------- labels and archive safety


def label_of(parts: list[str]) -> str | None:
    """cat/dog from the nearest Cat(s)/Dog(s) folder, else from a cat.N / dog.N file name."""
    for folder in reversed(parts[:-1]):
        if folder.lower() in FOLDER_LABELS:
            return FOLDER_LABELS[folder.lower()]
    match = NAME_LABEL.match(parts[-1])
    return match.group(1).lower() if match else None


def unsafe_member(info: zipfile.ZipInfo) -> str:
    """Why an archive member must not be touched, or "" if it is an ordinary file."""
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "unsafe archive entry: absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "unsafe archive entry: '..' in path"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "unsafe archive entry: symbolic link"
    return ""


def skipped_name(parts: list[str]) -> bool:
    """Hidden files and macOS resource forks (`__MACOSX/`, `._cat.1.jpg`) are not images."""
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def add_file(scan: Scan, parts: list[str], source: str, size: int, read: Callable[[], bytes], path: Path | None = None):
    """Record one listed file: an image entry, an unlabelled image, or ignored non-image junk."""
    if Path(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
        scan.ignored += 1  # Thumbs.db, sampleSubmission.csv, README...
        return
    label = label_of(parts)
    if label is None:
        scan.unlabelled += 1  # e.g. the competition's test1/ set
    elif size > images.MAX_FILE_BYTES:  # never read it: it could exhaust memory
        scan.rejects.append((source, f"file too large: {size} bytes"))
    else:
        scan.entries.append(Entry(source, parts[-1], label, read, path))


# ---------------------------------------------------------------- listing SOURCE


def walk_files(root: Path) -> list[Path]:
    """Every file below root, sorted, so listing order never depends on the filesystem."""

    def refuse(error: OSError):
        raise SplitError(f"cannot list {error.filename}: {error.strerror}")

    return sorted(Path(folder, name) for folder, _, files in os.walk(root, onerror=refuse) for name in files)


def fingerprint(source: Path) -> str:
    """A cheap fingerprint of SOURCE from names, sizes and modification times (no reading)."""
    paths = walk_files(source) if source.is_dir() else [source]
    stamps = []
    for path in paths:
        st = path.stat()
        stamps.append(f"{path.relative_to(source.parent).as_posix()} {st.st_size} {st.st_mtime_ns}")
    return hashlib.sha256("\n".join(stamps).encode()).hexdigest()


def scan_folder(root: Path, scan: Scan, stack: contextlib.ExitStack, staging: Path):
    """List every file under root into scan, opening any zip archives found there."""
    for path in walk_files(root):
        rel = path.relative_to(root.parent)
        if skipped_name(list(rel.parts)):
            continue
        if path.name.lower().endswith(".zip"):
            scan_zip_file(path, rel.as_posix(), scan, stack, staging)
        else:
            add_file(scan, list(rel.parts), rel.as_posix(), path.stat().st_size, path.read_bytes, path)


def scan_zip_file(path: Path, source: str, scan: Scan, stack: contextlib.ExitStack, staging: Path):
    """List a zip on disk (SOURCE itself or one inside a SOURCE folder)."""
    try:
        archive = stack.enter_context(zipfile.ZipFile(path))
    except (zipfile.BadZipFile, OSError) as error:
        if source == path.name:  # SOURCE itself: a user mistake, not one bad file among many
            raise SplitError(f"cannot read {path} as a zip archive: {error}") from None
        scan.rejects.append((source, f"unreadable archive: {error}"))
        return
    scan_zip(archive, source, scan, stack, staging, depth=1)


def scan_zip(archive: zipfile.ZipFile, prefix: str, scan: Scan, stack: contextlib.ExitStack, staging: Path, depth: int):
    """List the members of an open archive into scan, descending into nested zips."""
    lock = threading.Lock()
    seen = Counter()
    # By name, then by place in the archive: members that share a name (an archive appended to, or a
    # crafted one) are numbered the same way however the archive lists them, and each is kept.
    for info in sorted(archive.infolist(), key=lambda i: (i.filename, i.header_offset)):
        seen[info.filename] += 1
        source = f"{prefix}!{info.filename}"
        if seen[info.filename] > 1:
            source += f"#{seen[info.filename]}"
            scan.same_name += 1
        parts = [p for p in re.split(r"[/\\]", info.filename) if p]
        reason = unsafe_member(info)  # before skipping names: "../x.jpg" must be reported, not hidden
        if not reason and (info.is_dir() or not parts or skipped_name(parts)):
            continue
        if reason:
            scan.rejects.append((source, reason))
        elif info.filename.lower().endswith(".zip"):
            open_nested(archive, info, source, scan, stack, staging, depth)
        else:
            folders = prefix.split("!")[-1].split("/")  # a Cat/ or Dog/ folder above the archive labels it too
            add_file(scan, [*folders, *parts], source, info.file_size, member_reader(archive, info, lock))


def open_nested(archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: str, scan: Scan,
                stack: contextlib.ExitStack, staging: Path, depth: int):
    """Copy a nested zip into a spooled buffer (memory, or a file inside DEST) and list it."""
    if depth >= MAX_ZIP_DEPTH:
        scan.rejects.append((source, f"archive nested deeper than {MAX_ZIP_DEPTH} levels"))
        return
    buffer = stack.enter_context(tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, dir=staging))
    try:
        with archive.open(info) as member:
            # Not shutil.copyfileobj: a failed write into DEST (disk full) must stop the run, while a
            # failed read only makes this one archive unreadable.
            while chunk := member.read(1 << 20):
                try:
                    buffer.write(chunk)
                except OSError as error:
                    raise DestWriteError(error) from None
        nested = stack.enter_context(zipfile.ZipFile(buffer))
    except BAD_MEMBER as error:
        scan.rejects.append((source, f"unreadable archive: {error}"))
        return
    found = len(scan.entries)
    scan_zip(nested, source, scan, stack, staging, depth + 1)
    if len(scan.entries) == found:  # test1.zip: nothing labelled inside, free its memory now
        nested.close()
        buffer.close()


def member_reader(archive: zipfile.ZipFile, info: zipfile.ZipInfo, lock: threading.Lock) -> Callable[[], bytes]:
    """A function that reads one member; the lock keeps worker threads from sharing a ZipFile at once
    (its open-file count is not thread-safe). Reading is quick next to decoding, which stays parallel."""

    def read() -> bytes:
        with lock:
            return archive.read(info)

    return read


def scan_source(source: Path, stack: contextlib.ExitStack, staging: Path) -> Scan:
    """List SOURCE (a folder or a zip): the labelled images in it, and what was skipped."""
    scan = Scan()
    if source.is_dir():
        scan_folder(source, scan, stack, staging)
    else:
        scan_zip_file(source, source.name, scan, stack, staging)
    return scan


# ---------------------------------------------------------------- checking one image


def check_entry(entry: Entry, staged: Path, link: bool, max_pixels: int) -> Checked:
    """Read, hash and decode one entry; stage the file to keep (copy, link or upright RGB PNG).

    A file that is not a usable image is rejected; a failed write into DEST raises DestWriteError."""
    try:
        data = entry.read()
    except BAD_MEMBER as error:  # permissions, bad CRC, encryption
        return Checked(entry, reject=f"unreadable: {error}")
    digest = hashlib.sha256(data).hexdigest()
    try:
        image = images.open_image(data, max_pixels)
        upright = images.upright_rgb(image) if images.needs_conversion(image) else None
    except images.BadImage as error:
        return Checked(entry, digest, reject=str(error))
    try:
        if upright is not None:
            upright.save(staged, "PNG")
            return Checked(entry, digest, converted=True, staged=staged)
        if link and entry.path is not None:
            with contextlib.suppress(OSError):  # another filesystem (EXDEV) or no link support: copied
                os.link(entry.path, staged)
                return Checked(entry, digest, staged=staged, linked=True)
        staged.write_bytes(data)
    except OSError as error:
        raise DestWriteError(error) from None
    return Checked(entry, digest, staged=staged)


def check_all(entries: list[Entry], folder: Path, link: bool, workers: int) -> list[Checked]:
    """Check every entry in parallel threads: Pillow, hashlib and file I/O release the GIL; a
    progress line if that takes long (the full download: about a minute)."""
    folder.mkdir()
    jobs = [(entry, folder / f"{i:07d}") for i, entry in enumerate(entries)]
    checked = []
    with ThreadPoolExecutor(max_workers=workers) as pool, console.Progress("checking", len(jobs)) as line:
        for result in pool.map(lambda job: check_entry(*job, link, images.MAX_PIXELS), jobs):
            checked.append(result)
            line.update(len(checked))
    return checked


# ---------------------------------------------------------------- splitting and naming


def split_groups(kept: list[Checked], val_fraction: float, seed: int, test_fraction: float = 0.0) -> dict[str, str]:
    """Map each sha256 to a split, stratified per class and reproducible anywhere.

    Identical bytes form one group, so a duplicate never lands in two splits. Groups are ranked
    by a seeded SHA-256 of their content hash, not by file order or Python's salted hash(), so the
    same seed and images give the same split on any machine and adding images moves few others.
    Down the ranking, validation takes groups until it holds round(val_fraction x the class's
    images), then test until it holds round(test_fraction x them); train keeps the rest. So
    test_fraction 0 gives exactly the two-way split, and a test split comes out of train alone.
    """
    held_out = [("validation", val_fraction)] + ([(TEST_SPLIT, test_fraction)] if test_fraction else [])
    assignment = {}
    for label in LABELS:
        sizes = Counter(c.sha256 for c in kept if c.entry.label == label)
        ranked = sorted(sizes, key=lambda sha: hashlib.sha256(f"{seed}:{sha}".encode()).hexdigest())
        total = sum(sizes.values())
        every_split = len(ranked) > len(held_out)  # enough groups for each split to get at least one
        i = 0
        for n, (split, share) in enumerate(held_out):
            target = round(share * total)
            last = len(ranked) - (len(held_out) - n) if every_split else len(ranked)  # leave one per later split
            placed = 0
            while i < last and (placed < target or (every_split and placed == 0)):
                assignment[ranked[i]] = split
                placed += sizes[ranked[i]]
                i += 1
        for sha in ranked[i:]:
            assignment[sha] = "train"
    return assignment


def drop_conflicts(checked: list[Checked]) -> list[Checked]:
    """Reject byte-identical images labelled both cat and dog: no split could hold them fairly."""
    labels = defaultdict(set)
    for c in checked:
        if not c.reject:
            labels[c.sha256].add(c.entry.label)
    result = []
    for c in checked:
        if not c.reject and len(labels[c.sha256]) > 1:
            c.staged.unlink()
            c = Checked(c.entry, c.sha256, reject="same image labelled both cat and dog")
        result.append(c)
    return result


def output_names(kept: list[Checked]) -> list[tuple[Checked, str]]:
    """Each kept entry with its output file name: its source name, unique within its class even on a
    case-insensitive filesystem, under a suffix training reads. In source order, so reproducible."""
    named, taken = [], set()
    for c in sorted(kept, key=lambda c: c.entry.source):
        base = PurePosixPath(c.entry.name)
        if c.converted:
            base = base.with_suffix(".png")
        elif base.suffix.lower() not in COPY_SUFFIXES:
            base = base.with_suffix(".jpg")  # JPEG data under another name
        name, n = base.name, 1
        while (c.entry.label, name.lower()) in taken:
            n += 1
            name = f"{base.stem}-{n}{base.suffix}"
        taken.add((c.entry.label, name.lower()))
        named.append((c, name))
    return named


def write_csv(path: Path, header: list[str], rows: list[tuple]):
    """Write a small CSV file with a header row."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def place(kept: list[Checked], staging: Path, config: Config) -> list[tuple]:
    """Move staged files into staging/{split}/{class}/; return the manifest rows sorted by path."""
    for split in config.splits:
        for class_dir in CLASS_DIRS:
            (staging / split / class_dir).mkdir(parents=True)
    splits = split_groups(kept, config.val_fraction, config.seed, config.test_fraction)
    rows = []
    for c, name in output_names(kept):
        class_dir = CLASS_DIRS[LABELS.index(c.entry.label)]
        rel = PurePosixPath(splits[c.sha256], class_dir, name)
        c.staged.rename(staging / rel)
        rows.append((rel.as_posix(), c.entry.source, c.entry.label, splits[c.sha256], c.sha256))
    return sorted(rows)


# ---------------------------------------------------------------- DEST state


def check_paths(config: Config):
    """Refuse a missing/unusable SOURCE and any overlap between SOURCE and DEST."""
    source, dest = config.source, config.dest
    if not source.exists():
        raise SplitError(f"source {source} does not exist")
    if not os.access(source, os.R_OK):
        raise SplitError(f"source {source} is not readable")
    if source.is_file() and not zipfile.is_zipfile(source):
        raise SplitError(f"source {source} is a file but not a zip archive: give a folder or a .zip")
    if dest == source:
        raise SplitError("source and dest are the same folder: choose a new dest, e.g. --dest data")
    if dest.is_relative_to(source) and source.is_dir():
        raise SplitError(f"dest {dest} is inside source {source}: choose a dest outside it")
    if source.is_relative_to(dest):
        raise SplitError(f"source {source} is inside dest {dest}: --force could delete it; move it out")
    if dest.exists() and not dest.is_dir():
        raise SplitError(f"dest {dest} exists and is not a folder")
    if config.val_fraction + config.test_fraction >= 1:
        raise SplitError(f"--val-fraction {config.val_fraction} and --test-fraction {config.test_fraction} leave "
                         "no images for train: their sum must be below 1")


def check_dest_is_ours(dest: Path):
    """Refuse a non-empty DEST that holds neither a split of ours nor an interrupted one."""
    if dest.exists() and any(dest.iterdir()) and not (dest / SPLIT_JSON).exists() and not (dest / STAGING).exists():
        raise SplitError(f"dest {dest} is not empty and has no {SPLIT_JSON}: it is not a split this tool "
                         "wrote, so nothing there is removed; choose an empty or new folder")


def changes(previous: dict, recorded: dict) -> str:
    """What differs between DEST's split.json and this run, e.g. "--seed 42 there, 7 now"."""
    said = []
    for key, now in recorded.items():
        if previous.get(key) == now:
            continue
        if key == "source_fingerprint":
            said.append("files in the source changed")
        elif key == "version":
            said.append(f"written by another version of this tool (format {previous.get(key)}, now {now})")
        elif isinstance(now, bool):
            said.append(f"--{key} {'given' if previous.get(key) else 'not given'} there, "
                        f"{'given' if now else 'not given'} now")
        else:
            said.append(f"--{key.replace('_', '-')} {previous.get(key)} there, {now} now")
    return "; ".join(said)


def needs_build(config: Config, recorded: dict) -> bool:
    """False if DEST already holds exactly this split; True to build. A different one needs --force."""
    dest = config.dest
    previous = read_json(dest / SPLIT_JSON)
    if previous is None:
        return True  # new, empty or interrupted DEST
    previous = {"test_fraction": 0, **previous}  # written before --test-fraction existed: a two-way split
    if previous == recorded:
        return False
    if not config.force:
        todo = "; add --force to rebuild it"
        if not previous["test_fraction"] and config.test_fraction:  # e.g. a split made before --test-fraction
            todo = (f": it has no {TEST_SPLIT}/ split; add --force to rebuild it with one (its images come out of "
                    "train/), or --test-fraction 0 to keep it as it is")
        raise SplitError(f"dest {dest} holds a split made with other arguments or another source "
                         f"({changes(previous, recorded)}; see {dest / SPLIT_JSON}){todo}")
    if not previous["test_fraction"] and (dest / TEST_SPLIT).exists():
        raise SplitError(f"dest {dest} has a {TEST_SPLIT}/ folder that this tool did not write, and --force removes "
                         "only what it wrote: move that folder out of dest and rerun")
    return True


def clear_outputs(dest: Path):
    """Remove a previous split from DEST: only the names this tool writes, split.json first."""
    for name in (SPLIT_JSON, *SPLITS, TEST_SPLIT, MANIFEST, REJECTED):  # test/: needs_build checked it is ours
        path = dest / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)  # hard links in here only drop a link: SOURCE files survive
        elif path.exists() or path.is_symlink():
            path.unlink()


# ---------------------------------------------------------------- the run


def reason_category(reason: str) -> str:
    """The part of a reject reason before its detail, for counting."""
    return reason.split(":")[0]


def summary(rows: list[tuple], rejects: list[tuple[str, str]], scan: Scan, checked: list[Checked]) -> list[str]:
    """The lines printed at the end of a run: counts per class per split, rejects per reason."""
    counts = Counter((row[3], row[2]) for row in rows)
    splits = (*SPLITS, TEST_SPLIT) if any(row[3] == TEST_SPLIT for row in rows) else SPLITS
    width = max(len(s) for s in splits)
    lines = [f"{'':{width}}  " + "  ".join(f"{c:>6}" for c in CLASS_DIRS)]
    for split in splits:
        lines.append(f"{split:{width}}  " + "  ".join(f"{counts[split, label]:6d}" for label in LABELS))
    reasons = Counter(reason_category(reason) for _, reason in rejects)
    detail = ", ".join(f"{n} {reason}" for reason, n in sorted(reasons.items()))
    lines.append(f"rejected {len(rejects)}" + (f": {detail}" if detail else ""))
    converted = sum(c.converted for c in checked if not c.reject)
    duplicates = len(rows) - len({row[4] for row in rows})
    lines.append(f"converted to upright RGB PNG: {converted}; byte-identical copies kept in their twin's split: "
                 f"{duplicates}")
    lines.append(f"ignored: {scan.unlabelled} unlabelled images, {scan.ignored} non-image files")
    if scan.same_name:
        lines.append(f"archive members named like an earlier member of their archive: {scan.same_name} "
                     "(each read on its own, listed as NAME#2, NAME#3... in manifest.csv and rejected.csv)")
    return lines


def run_split(config: Config, log: Callable[[str], None] = print) -> int:
    """Check SOURCE and write the split into DEST; return 0. Raises SplitError on user mistakes."""
    check_paths(config)
    dest, staging = config.dest, config.dest / STAGING
    check_dest_is_ours(dest)
    created = not dest.exists()
    if staging.exists() and not (dest / SPLIT_JSON).exists():
        log(f"{dest} holds an interrupted split; rebuilding it")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)  # also holds big nested zips while listing, so they stay inside DEST
        with contextlib.ExitStack() as stack, warnings.catch_warnings():
            # Pillow warns about odd EXIF and large images; both are judged in decode() instead.
            warnings.filterwarnings("ignore", module="PIL")
            return _build(config, stack, log)
    except OSError as error:  # reads of SOURCE are handled where they happen, so this is a write into DEST
        raise DestWriteError(error) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):  # on a full disk this may fail too; the error above says why
            if not (dest / SPLIT_JSON).exists() and any(dest.iterdir()):
                staging.mkdir()  # marks a half-written DEST as ours, so the next run may rebuild it
            elif created and not any(dest.iterdir()):
                dest.rmdir()


def _build(config: Config, stack: contextlib.ExitStack, log: Callable[[str], None]) -> int:
    """run_split's work, once DEST/.split-tmp exists: list, check, split, then swap outputs in."""
    started = time.perf_counter()
    dest, staging = config.dest, config.dest / STAGING
    recorded = config.recorded(fingerprint(config.source))
    if not needs_build(config, recorded):
        log(f"{dest} already holds this split of {config.source} (same arguments, source unchanged): nothing to do")
        return 0
    scan = scan_source(config.source, stack, staging)
    labels = {e.label for e in scan.entries}
    if not labels:
        raise SplitError(f"no labelled images in {config.source}: expected cat.N.jpg / dog.N.jpg names "
                         "or Cat/ and Dog/ folders")
    if len(labels) == 1:
        raise SplitError(f"only {labels.pop()} images in {config.source}: a classifier needs both cats and dogs")
    log(f"checking {len(scan.entries)} images from {config.source} with {config.workers} threads ...")
    checked = drop_conflicts(check_all(scan.entries, staging / "files", config.link, config.workers))
    kept = [c for c in checked if not c.reject]
    if {c.entry.label for c in kept} != set(LABELS):
        raise SplitError(f"{config.source} has no usable images of one class after rejecting broken files")
    rows = place(kept, staging, config)
    rejects = sorted(scan.rejects + [(c.entry.source, c.reject) for c in checked if c.reject])
    write_csv(staging / MANIFEST, ["path", "source", "label", "split", "sha256"], rows)
    write_csv(staging / REJECTED, ["source", "reason"], rejects)
    clear_outputs(dest)  # the old split goes only now that the new one is ready beside it
    for name in (*config.splits, MANIFEST, REJECTED):
        (staging / name).rename(dest / name)
    (staging / SPLIT_JSON).write_text(json.dumps(recorded, indent=2) + "\n")
    (staging / SPLIT_JSON).replace(dest / SPLIT_JSON)  # last: its presence means DEST is complete
    seconds = time.perf_counter() - started
    if config.link and not all(c.linked for c in kept if not c.converted):
        log("--link: some files could not be hard-linked (archive members, or another filesystem): copied them")
    log(f"split {len(rows)} images into {dest} in {seconds:.1f} s ({len(checked) / seconds:.0f} images/s), "
        f"seed {config.seed}, {config.val_fraction:.0%} validation"
        + (f", {config.test_fraction:.0%} test" if config.test_fraction else ", no test split"))
    for line in summary(rows, rejects, scan, checked):
        log(line)
    if rejects:
        log(f"reasons per file: {dest / REJECTED}")
    return 0


def prepare_demo(dest: Path, **drawing) -> Path:
    """Draw the synthetic demo set (hparam_sweep/demo.py's draw_demo_source, given `drawing`) and
    split it into dest like real data, into train/ and validation/ only (the demo only shows the
    search running); return dest. A repeat call is a quick no-op."""
    from hparam_sweep import demo  # NumPy: not for --help or a real split

    dest = Path(dest).expanduser().resolve()
    source = demo.draw_demo_source(dest, **drawing)
    previous = read_json(dest / SPLIT_JSON) or {}
    run_split(Config(source=source, dest=dest, test_fraction=0, force=previous.get("source") == str(source)))
    return dest


# ---------------------------------------------------------------- command line


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
                      help="labelled images: dogs-vs-cats.zip, train.zip, an extracted train/ folder, "
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
