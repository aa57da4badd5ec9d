"""The decode cache: each machine decodes the images once, into .npy files that every later run
and every trial process on that machine maps instead of decoding again.

    ~/.cache/hparam-sweep/decoded/         ($XDG_CACHE_HOME/hparam-sweep/decoded, or train.py --cache-dir)
      150px-3f2a9c.../                      one folder per key: the data, the image size, the decoder
        train-images.npy  train-labels.npy  validation-images.npy  validation-labels.npy
        key.json                            what the key was made of, for people (counts, data folder)
      150px-3f2a9c....lock                  flock: processes that start together decode once

A folder appears under its final name only once complete (written as .NAME.tmp-PID, then
os.replace'd), so a kill never leaves one that looks complete. A folder whose files do not have the
shapes its key implies (truncated, resized, unreadable) is rebuilt, never trusted. NumPy only: the
decoding itself is pipeline.py's.
"""

import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np

FORMAT = 1  # bump when the files or the decode change: every older folder then misses
LABEL_DTYPE = np.int32
KEY_FILE = "key.json"


def default_dir():
    """$XDG_CACHE_HOME/hparam-sweep/decoded, or ~/.cache/hparam-sweep/decoded: per user and machine."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says to ignore a relative XDG_CACHE_HOME.
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "hparam-sweep" / "decoded"


def location(cache_dir=None, enabled=True):
    """The cache folder to use: cache_dir, or this machine's default_dir(); None when caching is off."""
    return None if not enabled else Path(cache_dir) if cache_dir else default_dir()


def key(fingerprint, image_size, root, files, decoder):
    """The cache folder's name for these images at this size.

    fingerprint: pipeline.data_fingerprint. files: {split: [path, ...]} in decode order, under the
    data folder `root`; each file's path relative to root, size and modification time go into the
    key (a fingerprint made without data_split.py's manifest sees only names and sizes: an edited
    image must miss). Relative, so that one data set has one entry however its folder is named on
    the command line (data, ./data, /home/me/data) or wherever the process runs. decoder: the
    versions whose decode and resize make the pixels.
    """
    def stat(path):
        st = os.stat(path)
        return Path(os.path.relpath(path, root)).as_posix(), st.st_size, st.st_mtime_ns

    stats = {split: [stat(p) for p in paths] for split, paths in files.items()}
    text = json.dumps({"format": FORMAT, "fingerprint": fingerprint, "image_size": image_size, "decoder": decoder,
                       "files": stats}, sort_keys=True)
    return f"{image_size}px-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def size_of(folder):
    """Bytes of the files in folder."""
    return sum(p.stat().st_size for p in folder.iterdir())


def mapped(folder, counts, image_size):
    """{split: (images, labels)} of a complete cache folder, images memory-mapped read-only;
    None if a file is missing, unreadable, or not the shape and size `counts` implies."""
    shape = (image_size, image_size, 3)
    arrays = {}
    try:
        for split, n in counts.items():
            images = np.load(folder / f"{split}-images.npy", mmap_mode="r")
            labels = np.load(folder / f"{split}-labels.npy")
            complete = images.offset + images.nbytes == (folder / f"{split}-images.npy").stat().st_size
            if not (complete and images.shape == (n, *shape) and images.dtype == np.uint8
                    and labels.shape == (n,) and labels.dtype == LABEL_DTYPE and ((labels == 0) | (labels == 1)).all()):
                return None
            arrays[split] = images, labels
    except (OSError, ValueError, EOFError):  # missing, truncated, or not .npy at all
        return None
    return arrays


class Writer:
    """One .npy file written batch by batch: the header first, then each batch appended.

    Not np.lib.format.open_memmap: writing through a map puts the whole file into the writing
    process's resident set, and a full disk (tmpfs) ends it with SIGBUS; a plain write raises
    OSError (ENOSPC), which the caller turns into a decode in memory.
    """

    def __init__(self, path, shape, dtype):
        self.file, self.dtype = path.open("wb"), np.dtype(dtype)
        np.lib.format.write_array_header_1_0(
            self.file, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape})

    def __enter__(self):
        return self

    def __exit__(self, error, *_):
        if error is None:
            self.close()
        else:
            self.file.close()

    def write(self, batch):
        np.ascontiguousarray(batch, self.dtype).tofile(self.file)

    def close(self):
        # On disk before the folder is renamed into place: a power cut must not leave a complete-looking folder of zeros.
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


def remove_abandoned(cache_dir, held):
    """Delete the half-built folders (.KEY.tmp-PID) that killed processes left: those of key `held`,
    whose lock the caller holds, and those of any key whose lock nobody holds (every builder holds
    its key's lock until its folder is complete)."""
    for tmp in cache_dir.glob(".*.tmp-*"):
        name = tmp.name[1:].rpartition(".tmp-")[0]
        if tmp.is_dir() and (name == held or lock_is_free(cache_dir / f"{name}.lock")):
            shutil.rmtree(tmp, ignore_errors=True)


def lock_is_free(path):
    with path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def load(cache_dir, name, counts, image_size, build, about):
    """({split: (images, labels)} memory-mapped from cache_dir/name, decoded: bool).

    A missing or damaged folder is built first by build(folder), which writes the four .npy files
    (see Writer) into the folder it is given; `about` goes into key.json. The first of several
    processes asking at once builds it, the others wait for it (flock) and then map it. Raises
    OSError when the cache cannot be written (read-only, disk full): the caller decodes in memory.
    """
    folder = cache_dir / name
    # A finished folder never changes, so it is read without the lock (a read-only cache works too).
    if arrays := mapped(folder, counts, image_size):
        return arrays, False
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / f"{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if arrays := mapped(folder, counts, image_size):  # built by the process that held the lock
            return arrays, False
        if folder.exists():  # damaged: rebuilt below
            shutil.rmtree(folder)
        remove_abandoned(cache_dir, name)
        needed = sum(n * (image_size * image_size * 3 + LABEL_DTYPE().itemsize) for n in counts.values())
        if (free := shutil.disk_usage(cache_dir).free) < needed:  # say so now, not after most of the decode
            raise OSError(errno.ENOSPC, f"{needed / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free")
        tmp = cache_dir / f".{name}.tmp-{os.getpid()}"
        tmp.mkdir()
        try:
            build(tmp)
            built_by = {"host": socket.gethostname(), "pid": os.getpid(), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            (tmp / KEY_FILE).write_text(json.dumps({**about, "counts": counts, "image_size": image_size,
                                                    "format": FORMAT, "built_by": built_by}, indent=2) + "\n")
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    arrays = mapped(folder, counts, image_size)
    if arrays is None:
        raise OSError(f"{folder} was written but does not read back")
    return arrays, True
