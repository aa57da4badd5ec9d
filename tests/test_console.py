"""The progress line for long one-off jobs: plain lines into a file or pipe, redrawn on a terminal."""

import functools
import io
import re

from conftest import write_dataset

import console
import data_split
import pipeline


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_into_a_file_it_is_one_plain_line_per_update():
    out = io.StringIO()
    with console.Progress("checking", 3, stream=out, delay=0, every=0) as progress:
        for done in (1, 2, 3):
            progress.update(done)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 3
    assert [re.match(r"checking: (\d) of 3 images \(\d+%\), [\d,]+ images/s", line)[1] for line in lines] == ["1", "2", "3"]
    assert "ETA" in lines[0] and "ETA" not in lines[2]


def test_on_a_terminal_it_is_one_line_redrawn_in_place():
    out = Terminal()
    with console.Progress("decoding train/", 1000, stream=out, delay=0, redraw=0) as progress:
        progress.update(5)
        progress.update(1000)
    text = out.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1  # two updates, the final redraw
    assert "1,000 of 1,000 images (100%)" in text.split("\r")[-1]


def test_a_quick_job_prints_nothing():
    for out in (io.StringIO(), Terminal()):
        with console.Progress("checking", 3, stream=out, delay=3600) as progress:
            progress.update(3)
        assert out.getvalue() == ""


def test_decoding_and_checking_say_how_far_they_are(tmp_path, capsys, monkeypatch):
    data = write_dataset(tmp_path / "data")  # 24 training images
    pipeline.load_split(data / "train", 24, batch_size=8, progress={"delay": 0, "every": 0})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" images")[0] for line in lines] == [f"decoding train/: {n} of 24" for n in (8, 16, 24)]

    monkeypatch.setattr(console, "Progress", functools.partial(console.Progress, delay=0, every=0))
    source = tmp_path / "source"
    for path in (data / "train").rglob("*.png"):
        (source / path.name).parent.mkdir(exist_ok=True)
        (source / path.name).write_bytes(path.read_bytes())
    assert data_split.main(["--source", str(source), "--dest", str(tmp_path / "split"), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "\r" not in out and re.findall(r"^checking: (\d+) of 24 images", out, re.M) == [str(n) for n in range(1, 25)]
