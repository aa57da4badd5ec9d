"""The decode cache: a machine decodes the images once; reruns and other processes map the files."""

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_train import FAST

from hparam_sweep import imagecache, pipeline
import train

ROOT = Path(__file__).resolve().parent.parent
ONE_TRIAL = ["--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam", "--grid", "learning_rate=0.01",
             "--epochs", "1", "--steps-per-epoch", "1"]


def arrays(data):
    """The (images, labels) NumPy arrays of a (train, validation) pair of ImageSets."""
    return [(s.images.numpy(), s.labels.numpy()) for s in data]


def assert_same(a, b):
    for (images_a, labels_a), (images_b, labels_b) in zip(arrays(a), arrays(b)):
        assert images_a.dtype == images_b.dtype and np.array_equal(images_a, images_b)
        assert labels_a.dtype == labels_b.dtype and np.array_equal(labels_a, labels_b)


def folders(cache):
    return sorted(p.name for p in cache.iterdir() if p.is_dir())


def refuse(directory, *_):
    """pipeline.decoded_batches for a test in which nothing may be decoded any more."""
    raise AssertionError(f"decoded {directory} again")


def test_the_cache_holds_exactly_what_a_decode_gives_and_a_rerun_does_not_decode(dataset, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    direct = pipeline.load_data(dataset, 24)  # no cache: decoded in memory
    assert "decoded in memory (no cache)" in capsys.readouterr().out and not cache.exists()

    first = pipeline.load_data(dataset, 24, cache)
    out = capsys.readouterr().out
    [name] = folders(cache)
    assert f"decoded into the decode cache {cache / name}" in out
    assert_same(first, direct)
    assert json.loads((cache / name / imagecache.KEY_FILE).read_text())["counts"] == {"train": 24, "validation": 8}

    monkeypatch.setattr(pipeline, "decoded_batches", refuse)
    again = pipeline.load_data(dataset, 24, cache)
    assert f"read from the decode cache {cache / name}" in capsys.readouterr().out
    assert_same(again, direct)  # bit for bit, labels too
    assert folders(cache) == [name]


def test_one_data_set_is_one_entry_however_its_folder_is_named_and_abandoned_builds_go(dataset, tmp_path,
                                                                                      monkeypatch, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    # Folders that killed builders of other keys left; one whose key a live process is building now.
    (cache / ".24px-abandoned.tmp-4242").mkdir()
    (cache / ".24px-abandoned.tmp-4242" / "train-images.npy").write_bytes(b"half")
    (cache / ".24px-busy.tmp-4343").mkdir()
    with (cache / "24px-busy.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        first = pipeline.load_data(dataset, 24, cache)
        assert not (cache / ".24px-abandoned.tmp-4242").exists()
        assert (cache / ".24px-busy.tmp-4343").is_dir()
    [name] = [f for f in folders(cache) if not f.startswith(".")]

    # The same images as --data data, ./data, an absolute path, or moved elsewhere: no second decode.
    monkeypatch.setattr(pipeline, "decoded_batches", refuse)
    monkeypatch.chdir(dataset.parent)
    moved = tmp_path / "elsewhere" / "data"
    shutil.copytree(dataset, moved)  # copy2: same sizes and modification times
    for spelling in (Path(dataset.name), Path(".") / dataset.name, dataset.resolve(), moved):
        assert_same(pipeline.load_data(spelling, 24, cache), first)
    assert [f for f in folders(cache) if not f.startswith(".")] == [name]


def test_a_changed_image_or_another_size_misses(dataset, tmp_path, capsys):
    cache = tmp_path / "cache"
    # An image stored uncompressed: other pixels of the same size make a file of the same size,
    # so data_fingerprint (names and sizes, without data_split.py's manifest) cannot tell.
    path = dataset / "train" / "cats" / "cat.0.png"
    Image.new("RGB", (24, 24), (10, 20, 30)).save(path, compress_level=0)
    pipeline.load_data(dataset, 24, cache)
    [before], fingerprint = folders(cache), pipeline.data_fingerprint(dataset)
    size = path.stat().st_size

    Image.new("RGB", (24, 24), (200, 100, 50)).save(path, compress_level=0)
    # Edits are seconds apart in life; here, make sure the clock has moved on for the new file.
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert path.stat().st_size == size and pipeline.data_fingerprint(dataset) == fingerprint
    capsys.readouterr()
    changed = pipeline.load_data(dataset, 24, cache)
    assert "decoded into the decode cache" in capsys.readouterr().out
    assert len(folders(cache)) == 2 and before in folders(cache)
    assert changed[0].images.numpy()[0, 0, 0].tolist() == [200, 100, 50]  # cat.0.png is the first training image

    pipeline.load_data(dataset, 16, cache)
    assert "decoded into the decode cache" in capsys.readouterr().out
    assert len(folders(cache)) == 3 and sum(name.startswith("16px-") for name in folders(cache)) == 1


@pytest.mark.parametrize("damage", ["truncated", "grown", "garbage labels", "missing file", "leftover of a killed build"])
def test_a_damaged_cache_is_rebuilt_not_trusted(dataset, tmp_path, capsys, damage):
    cache = tmp_path / "cache"
    direct = pipeline.load_data(dataset, 24, cache)
    [name] = folders(cache)
    images = cache / name / "train-images.npy"
    if damage == "truncated":
        images.write_bytes(images.read_bytes()[:-100])
    elif damage == "grown":
        images.write_bytes(images.read_bytes() + b"\0" * 100)
    elif damage == "garbage labels":
        (cache / name / "validation-labels.npy").write_bytes(b"not a numpy file")
    elif damage == "missing file":
        images.unlink()
    else:  # a build killed half way, beside a folder that was removed
        (cache / f".{name}.tmp-99999").mkdir()
        (cache / f".{name}.tmp-99999" / "train-images.npy").write_bytes(b"\x93NUMPY")
        (cache / name).rename(cache / "elsewhere")
    capsys.readouterr()

    rebuilt = pipeline.load_data(dataset, 24, cache)
    assert "decoded into the decode cache" in capsys.readouterr().out
    assert_same(rebuilt, direct)
    assert not list(cache.glob(".*.tmp-*"))
    pipeline.load_data(dataset, 24, cache)
    assert "read from the decode cache" in capsys.readouterr().out


def waiting_on_a_lock(pid):
    """Whether process pid waits for a flock (the kernel lists it in /proc/locks behind "->")."""
    return any(line.split()[1] == "->" and line.split()[5] == str(pid)
               for line in Path("/proc/locks").read_text().splitlines() if "FLOCK" in line)


def test_processes_starting_together_decode_once(dataset, tmp_path):
    """The first process decodes under the key's lock; one asking meanwhile waits for the lock (seen
    in /proc/locks, not assumed from timing), then maps what the first wrote: one decode."""
    cache, decoding, go = tmp_path / "cache", tmp_path / "decoding", tmp_path / "go"
    script = (
        "import sys, time; from pathlib import Path; from hparam_sweep import pipeline\n"
        "decode = pipeline.decode_to_cache\n"
        "def held(*a):\n"
        "    Path(sys.argv[3]).touch()  # decoding, under the lock: wait for the test's go\n"
        "    while not Path(sys.argv[4]).exists(): time.sleep(0.01)\n"
        "    return decode(*a)\n"
        "pipeline.decode_to_cache = held\n"
        "train, validation = pipeline.load_data(Path(sys.argv[1]), 24, Path(sys.argv[2]))\n"
        "print('sum', int(train.images.numpy().sum()), int(validation.images.numpy().sum()))\n"
    )

    def start():
        return subprocess.Popen([sys.executable, "-c", script, str(dataset), str(cache), str(decoding), str(go)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = start()
    processes = [first]
    try:
        while not decoding.exists():
            assert first.poll() is None, first.communicate()
            time.sleep(0.05)
        second = start()
        processes.append(second)
        deadline = time.monotonic() + 120
        while not waiting_on_a_lock(second.pid):
            assert second.poll() is None, second.communicate()
            assert time.monotonic() < deadline, "the second process never waited for the decode cache's lock"
            time.sleep(0.05)
        go.touch()
        outputs = [p.communicate(timeout=300) for p in processes]
    finally:
        for p in processes:
            p.kill()
    assert all(p.returncode == 0 for p in processes), outputs
    (first_out, _), (second_out, _) = outputs
    assert "decoded into the decode cache" in first_out and "read from the decode cache" in second_out
    assert first_out.splitlines()[-1] == second_out.splitlines()[-1]  # the same pixels in both
    assert len(folders(cache)) == 1


def test_train_reads_its_cache_on_a_rerun_and_trains_without_a_writable_one(dataset, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    args = ["--data", str(dataset), "--cache-dir", str(cache), *FAST, *ONE_TRIAL]
    assert train.main([*args, "--logdir", str(tmp_path / "first")]) == 0
    assert "decoded into the decode cache" in capsys.readouterr().out

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "decoded_batches", refuse)
        assert train.main([*args, "--logdir", str(tmp_path / "rerun")]) == 0
    assert "read from the decode cache" in capsys.readouterr().out

    # A cache that cannot be written (here: under a file, which fails even for root): a note, no traceback.
    (tmp_path / "a-file").write_text("")
    unwritable = tmp_path / "a-file" / "cache"
    assert train.main(["--data", str(dataset), "--cache-dir", str(unwritable), *FAST, *ONE_TRIAL,
                       "--logdir", str(tmp_path / "unwritable")]) == 0
    out, err = capsys.readouterr()
    assert f"decoded in memory: the decode cache in {unwritable} cannot be written (Not a directory)" in out
    assert "Traceback" not in out + err

    # --no-cache writes nothing, anywhere.
    before = sorted(cache.iterdir())
    assert train.main([*args[:2], "--no-cache", *FAST, *ONE_TRIAL, "--logdir", str(tmp_path / "none")]) == 0
    assert "decoded in memory (no cache)" in capsys.readouterr().out
    assert sorted(cache.iterdir()) == before
