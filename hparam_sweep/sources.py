"""What a download holds: its image files, in folders, zips and nested zips, each with its class.

The class of an image is the name of the folder that directly holds it: SOURCE's own name counts,
as it would in a zip of that folder, and a zip's top level lies in the folder that holds the zip.
Two exceptions: Kaggle's flat names `cat.N.jpg` / `dog.N.jpg` give cat or dog wherever they lie,
and a folder named like a split (train/, val/, test1/...) is no class, nor is the top of a SOURCE
zip. When the classes are cats and dogs (those names, or folders like PetImages' Cat/ and Dog/, in
any case, with or without the s), they are labelled cat and dog and go into cats/ and dogs/, as they
always have; any other class keeps its folder's name.

Everything here only lists: members are read later, by the functions that Entry.read holds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import stat
import tempfile
import threading
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hparam_sweep import images
from hparam_sweep.common import CLASS_DIRS, IMAGE_SUFFIXES, LABELS, UsageError

MAX_ZIP_DEPTH = 3  # dogs-vs-cats.zip!train.zip is depth 2; deeper nesting is not a dataset
SPOOL_BYTES = 1 << 30  # nested zips up to this size are read in memory, larger ones spill into DEST
# Reading an archive member: bad CRC (BadZipFile), encrypted or unsupported compression (RuntimeError),
# corrupt compressed data (zlib.error), truncated archive (EOFError), I/O errors (OSError).
BAD_MEMBER = (OSError, zipfile.BadZipFile, RuntimeError, EOFError, zlib.error)
KAGGLE_NAME = re.compile(rf"^({'|'.join(LABELS)})\.\d", re.IGNORECASE)  # cat.12.jpg, dog.7.jpg
# Folders that hold a split rather than a class; test1/ is the competition's unlabelled set.
SPLIT_FOLDER = re.compile(r"^(train|training|val|valid|validation|test|testing)\d*$", re.IGNORECASE)
PET_NAMES = {name: label for label, folder in zip(LABELS, CLASS_DIRS) for name in (label, folder)}


class SplitError(UsageError):
    """A user mistake or unusable input: main() prints the message on one line and exits 2."""


class DestWriteError(SplitError):
    """Writing into DEST failed (disk full, no permission): the run stops, DEST stays incomplete."""

    def __init__(self, error: OSError):
        where = f": {error.filename}" if error.filename else ""
        super().__init__(f"cannot write the split: {error.strerror or error}{where}; "
                         "fix that and rerun (DEST is left incomplete and will be rebuilt)")


@dataclass(frozen=True)
class Entry:
    """One labelled image file found in SOURCE, not read yet."""

    source: str  # e.g. "train/cat.1.jpg" or "dogs-vs-cats.zip!train.zip!train/cat.1.jpg"; unique
    name: str  # the file name, e.g. "cat.1.jpg": the output file is named after it
    label: str  # its class, as manifest.csv gives it: "cat", "daisy"
    read: Callable[[], bytes]
    path: Path | None = None  # the file on disk, so --link can hard-link it


@dataclass
class Scan:
    """Everything found while listing SOURCE."""

    entries: list[Entry] = field(default_factory=list)
    classes: dict[str, str] = field(default_factory=dict)  # {label: its folder under each split}, by folder
    rejects: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    unlabelled: int = 0
    ignored: int = 0
    same_name: int = 0  # archive members named like an earlier member of the same archive


# ---------------------------------------------------------------- classes and archive safety


def class_of(parts: list[str]) -> str | None:
    """The class of the image at parts (its folders inside SOURCE, then its name), or None: see the module's rule."""
    match = KAGGLE_NAME.match(parts[-1])
    if match:
        return match.group(1).lower()
    if len(parts) > 1 and not SPLIT_FOLDER.match(parts[-2]):
        return parts[-2]
    return None


def name_classes(entries: list[Entry]) -> tuple[list[Entry], dict[str, str]]:
    """The entries labelled as manifest.csv gives them, and {label: folder}, sorted by folder as Keras numbers
    them: cat and dog into cats/ and dogs/ for a cats-vs-dogs source, else each class's own name for both."""
    found = {e.label for e in entries}
    if all(name.lower() in PET_NAMES for name in found):
        labels = {name: PET_NAMES[name.lower()] for name in found}
        folders = {label: folder for label, folder in zip(LABELS, CLASS_DIRS) if label in labels.values()}
    else:
        labels = folders = {name: name for name in sorted(found)}
        spellings = Counter(name.lower() for name in found)
        if clash := sorted(name for name in found if spellings[name.lower()] > 1):
            raise SplitError(f"the class folders {' and '.join(clash)} differ only in case: rename one (on many "
                             "disks they would be one folder)")
    return [dataclasses.replace(e, label=labels[e.label]) for e in entries], folders


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


class Lister:
    """Lists SOURCE into a Scan. Archives stay open on `stack` until the run ends, since their members
    are read later; nested ones larger than SPOOL_BYTES spill into `staging`, inside DEST."""

    def __init__(self, stack: contextlib.ExitStack, staging: Path):
        self.scan, self.stack, self.staging = Scan(), stack, staging

    def add(self, parts: list[str], source: str, size: int, read: Callable[[], bytes], path: Path | None = None):
        """Record one listed file: an image entry, an unlabelled image, or ignored non-image junk."""
        scan = self.scan
        if Path(parts[-1]).suffix.lower() not in IMAGE_SUFFIXES:
            scan.ignored += 1  # Thumbs.db, sampleSubmission.csv, README...
            return
        label = class_of(parts)
        if label is None:
            scan.unlabelled += 1  # e.g. the competition's test1/ set
        elif size > images.MAX_FILE_BYTES:  # never read it: it could exhaust memory
            scan.rejects.append((source, f"file too large: {size} bytes"))
        else:
            scan.entries.append(Entry(source, parts[-1], label, read, path))

    def folder(self, root: Path):
        """List every file under root, opening any zip archives found there."""
        for path in walk_files(root):
            rel = path.relative_to(root.parent)  # "train/cat.1.jpg", as a zip of that folder names it
            if skipped_name(list(rel.parts)):
                continue
            if path.name.lower().endswith(".zip"):
                self.zip_file(path, rel.as_posix(), list(rel.parts[:-1]))
            else:
                self.add(list(rel.parts), rel.as_posix(), path.stat().st_size, path.read_bytes, path)

    def zip_file(self, path: Path, source: str, folders: list[str]):
        """List a zip on disk (SOURCE itself or one inside a SOURCE folder, within `folders` there)."""
        try:
            archive = self.stack.enter_context(zipfile.ZipFile(path))
        except (zipfile.BadZipFile, OSError) as error:
            if source == path.name:  # SOURCE itself: a user mistake, not one bad file among many
                raise SplitError(f"cannot read {path} as a zip archive: {error}") from None
            self.scan.rejects.append((source, f"unreadable archive: {error}"))
            return
        self.archive(archive, source, folders, depth=1)

    def archive(self, archive: zipfile.ZipFile, prefix: str, folders: list[str], depth: int):
        """List the members of an open archive, which lies within `folders`, descending into nested zips."""
        scan, lock, seen = self.scan, threading.Lock(), Counter()
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
                self.nested(archive, info, source, [*folders, *parts[:-1]], depth)
            else:
                self.add([*folders, *parts], source, info.file_size, member_reader(archive, info, lock))

    def nested(self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: str, folders: list[str], depth: int):
        """Copy a nested zip into a spooled buffer (memory, or a file inside DEST) and list it."""
        scan = self.scan
        if depth >= MAX_ZIP_DEPTH:
            scan.rejects.append((source, f"archive nested deeper than {MAX_ZIP_DEPTH} levels"))
            return
        buffer = self.stack.enter_context(tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES, dir=self.staging))
        try:
            with archive.open(info) as member:
                # Not shutil.copyfileobj: a failed write into DEST (disk full) must stop the run, while a
                # failed read only makes this one archive unreadable.
                while chunk := member.read(1 << 20):
                    try:
                        buffer.write(chunk)
                    except OSError as error:
                        raise DestWriteError(error) from None
            nested = self.stack.enter_context(zipfile.ZipFile(buffer))
        except BAD_MEMBER as error:
            scan.rejects.append((source, f"unreadable archive: {error}"))
            return
        found = len(scan.entries)
        self.archive(nested, source, folders, depth + 1)
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
    """List SOURCE (a folder or a zip): the labelled images in it, their classes, and what was skipped."""
    lister = Lister(stack, staging)
    if source.is_dir():
        lister.folder(source)
    else:
        lister.zip_file(source, source.name, [])
    scan = lister.scan
    scan.entries, scan.classes = name_classes(scan.entries)
    return scan
