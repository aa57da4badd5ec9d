"""A download's images checked, split per class and placed: data_split.py's work, behind its command line.

    run_split(Config(source, dest))   list SOURCE (sources.py), decode every image, write DEST's split
    prepare_demo(dest)                the synthetic cats-vs-dogs set of --demo, split like real data

DEST gets train/, validation/ and test/ with a folder per class, manifest.csv, rejected.csv and last
split.json, whose presence means the split is complete; SOURCE is only read.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import time
import warnings
import zipfile
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

from hparam_sweep import console, images
from hparam_sweep.common import MANIFEST, SPLITS, TEST_SPLIT, read_json
from hparam_sweep.sources import BAD_MEMBER, DestWriteError, Entry, Scan, SplitError, fingerprint, scan_source

REJECTED = "rejected.csv"
SPLIT_JSON = "split.json"
STAGING = ".split-tmp"  # built here first, moved into place at the end
# Bump when the output layout or the stored pixels change, so older splits are rebuilt. Not bumped
# for test/: a split with --test-fraction 0 is laid out as before, and split.json's test_fraction
# tells the others apart (a split.json without one is a two-way split, see needs_build). Nor for
# classes other than cats and dogs: a cats-vs-dogs split is laid out as before.
# 2: 16-bit images scaled (they were clipped to white), transparent pixels on white (images.py).
FORMAT_VERSION = 2

DEFAULT_VAL_FRACTION = 0.2  # Keras' tutorial default; 5,000 validation images on the full set
# 2,500 test images on the full set: at ~90% accuracy its standard error is ~0.6 points, while train
# keeps 70% of the images.
DEFAULT_TEST_FRACTION = 0.1
DEFAULT_SEED = 42
COPY_SUFFIXES = (".jpg", ".jpeg")  # output names of unconverted files, which are always JPEG data


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
class Checked:
    """The outcome of checking one entry: kept (staged file written) or rejected."""

    entry: Entry
    sha256: str = ""
    converted: bool = False
    staged: Path | None = None
    reject: str = ""  # "category" or "category: detail"
    linked: bool = False


def spoken(names: list[str]) -> str:
    """["a", "b", "c"] as "a, b and c"."""
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]]))


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
    for label in sorted({c.entry.label for c in kept}):
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
    """Reject byte-identical images of two classes or more: no split could hold them fairly."""
    labels = defaultdict(set)
    for c in checked:
        if not c.reject:
            labels[c.sha256].add(c.entry.label)
    result = []
    for c in checked:
        if not c.reject and len(labels[c.sha256]) > 1:
            c.staged.unlink()
            names = sorted(labels[c.sha256])
            c = Checked(c.entry, c.sha256, reject=f"same image labelled {'both ' if len(names) == 2 else ''}{spoken(names)}")
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


def check_classes(classes: dict[str, str], source: Path):
    """Refuse a source with fewer than two classes: nothing to tell apart."""
    if not classes:
        raise SplitError(f"no images in class folders in {source}: give it one folder per class, named after the "
                         "class (flowers/daisy/1.jpg); images in a folder named like a split (train/, val/, test/) "
                         "or at the top of a zip have no class")
    if len(classes) == 1:
        raise SplitError(f"only one class in {source} ({', '.join(classes.values())}/): a classifier needs two or "
                         "more; give it one folder per class")


def check_class_sizes(kept: list[Checked], classes: dict[str, str], splits: tuple[str, ...]):
    """Refuse a class with fewer different usable images than there are splits: each split needs one."""
    groups = Counter(label for label, _ in {(c.entry.label, c.sha256) for c in kept})
    if short := [f"{folder}/ has {groups[label]}" for label, folder in classes.items() if groups[label] < len(splits)]:
        raise SplitError(f"too few images to split: {', '.join(short)}; each class needs at least {len(splits)} "
                         f"different usable images (copies of one count once), one for each of "
                         f"{spoken([f'{split}/' for split in splits])}")


def place(kept: list[Checked], staging: Path, config: Config, classes: dict[str, str]) -> list[tuple]:
    """Move staged files into staging/{split}/{class folder}/; return the manifest rows sorted by path."""
    for split in config.splits:
        for folder in classes.values():
            (staging / split / folder).mkdir(parents=True)
    splits = split_groups(kept, config.val_fraction, config.seed, config.test_fraction)
    rows = []
    for c, name in output_names(kept):
        rel = PurePosixPath(splits[c.sha256], classes[c.entry.label], name)
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
    previous.pop("classes", None)  # what the source held, not a setting: the fingerprint covers it
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
    """The lines printed at the end of a run: a row per class with its count per split, rejects per reason."""
    counts = Counter((row[2], row[3]) for row in rows)
    splits = (*SPLITS, TEST_SPLIT) if any(row[3] == TEST_SPLIT for row in rows) else SPLITS
    width = max(len(folder) for folder in scan.classes.values())
    lines = [f"{'':{width}}" + "".join(f"  {split:>6}" for split in splits)]
    for label, folder in scan.classes.items():
        lines.append(f"{folder:{width}}" + "".join(f"  {counts[label, split]:{max(6, len(split))}d}" for split in splits))
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
    check_classes(scan.classes, config.source)
    log(f"checking {len(scan.entries)} images of {len(scan.classes)} classes from {config.source} "
        f"with {config.workers} threads ...")
    checked = drop_conflicts(check_all(scan.entries, staging / "files", config.link, config.workers))
    kept = [c for c in checked if not c.reject]
    check_class_sizes(kept, scan.classes, config.splits)
    rows = place(kept, staging, config, scan.classes)
    rejects = sorted(scan.rejects + [(c.entry.source, c.reject) for c in checked if c.reject])
    write_csv(staging / MANIFEST, ["path", "source", "label", "split", "sha256"], rows)
    write_csv(staging / REJECTED, ["source", "reason"], rejects)
    clear_outputs(dest)  # the old split goes only now that the new one is ready beside it
    for name in (*config.splits, MANIFEST, REJECTED):
        (staging / name).rename(dest / name)
    (staging / SPLIT_JSON).write_text(json.dumps({**recorded, "classes": list(scan.classes.values())}, indent=2) + "\n")
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
    split it into dest like real data, test/ included (so the demo ends with a test score and the
    chosen model's run in TensorBoard); return dest. A repeat call is a quick no-op."""
    from hparam_sweep import demo  # NumPy: not for --help or a real split

    dest = Path(dest).expanduser().resolve()
    source = demo.draw_demo_source(dest, **drawing)
    previous = read_json(dest / SPLIT_JSON) or {}
    run_split(Config(source=source, dest=dest, force=previous.get("source") == str(source)))
    return dest
