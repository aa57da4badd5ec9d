"""The test score stays honest: data/test is checked at start-up, scored again whenever its files
change (with or without data_split.py's manifest), refused in one line with no score (exit 4) when
it is not the test split of the data the trials trained on, and scored under the logdir's lock."""

import csv
import json
import shutil

import pytest
from conftest import write_dataset
from test_train import FAST

import data_split
import train
from hparam_sweep import evaluate, experiment, loop, pipeline
from hparam_sweep.common import UsageError

ONE = ["--grid", "num_units=8", "--grid", "dropout=0.1", "--grid", "optimizer=adam", "--grid", "learning_rate=0.01"]


def sweep(data, logdir):
    """train.py's exit code for a 1-trial grid on data (a rerun reuses the trial)."""
    return train.main(["--data", str(data), "--logdir", str(logdir), "--no-cache", *FAST, *ONE])


def with_test_split(root):
    """A hand-made data folder, no manifest: write_dataset's splits plus test/ of 3 images a class."""
    data = write_dataset(root / "data")
    shutil.move(write_dataset(root / "held-out", per_class=(1, 3), seed=5) / "validation", data / "test")
    return data


def split(root, seed=42, *more):
    """data_split.py's split (manifest.csv; 7 train, 2 validation, 1 test image a class) of 20 PNGs."""
    source = write_dataset(root / "source", per_class=(10, 0)) / "train"
    assert data_split.main(["--source", str(source), "--dest", str(root / "data"), "--seed", str(seed), *more]) == 0
    return root / "data"


def manifest_sources(data, split_name):
    with (data / "manifest.csv").open(newline="") as f:
        return {row["source"] for row in csv.DictReader(f) if row["split"] == split_name}


def scorings(monkeypatch):
    """The list that each computed (not reused) test score appends to."""
    calls, probabilities_on = [], evaluate.probabilities_on
    monkeypatch.setattr(evaluate, "probabilities_on", lambda *a: calls.append(a) or probabilities_on(*a))
    return calls


def refusal(capsys, words):
    """The one stderr line that refuses the test score; it says `words`, no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "no test score" in line]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in err, err
    return lines[0]


def test_a_test_split_the_score_cannot_read_is_refused_at_start_up(dataset, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(loop, "run_search", lambda *a: pytest.fail("it trained"))
    (dataset / "test" / "dogs").mkdir(parents=True)
    shutil.copy(dataset / "validation" / "dogs" / "dog.0.png", dataset / "test" / "dogs")
    assert sweep(dataset, tmp_path / "logs") == train.EXIT_USAGE
    err = capsys.readouterr().err
    assert "test must hold exactly the folders cats and dogs/ (found: dogs)" in err and "Traceback" not in err
    (dataset / "test" / "cats").mkdir()
    assert sweep(dataset, tmp_path / "logs") == train.EXIT_USAGE
    assert "test/cats holds no images" in capsys.readouterr().err
    shutil.rmtree(dataset / "test")
    pipeline.check_data(dataset)  # no test/ at all: it trains, with no test score


def test_the_test_score_is_made_under_the_logdir_lock(tmp_path, monkeypatch):
    logdir, probabilities_on, checked = tmp_path / "logs", evaluate.probabilities_on, []

    def scoring(*args):
        with pytest.raises(UsageError, match="in use"):
            with experiment.locked(logdir):
                pass
        checked.append(True)
        return probabilities_on(*args)

    monkeypatch.setattr(evaluate, "probabilities_on", scoring)
    assert sweep(with_test_split(tmp_path), logdir) == 0
    assert checked and (logdir / evaluate.SCORE_FILE).exists()


def test_without_a_manifest_the_score_follows_the_test_files(tmp_path, monkeypatch):
    data, logdir, calls = with_test_split(tmp_path), tmp_path / "logs", scorings(monkeypatch)
    assert sweep(data, logdir) == 0 and len(calls) == 1
    assert sweep(data, logdir) == 0 and len(calls) == 1  # nothing changed: not scored again
    (data / "test" / "cats" / "cat.0.png").unlink()
    assert sweep(data, logdir) == 0 and len(calls) == 2
    assert json.loads((logdir / evaluate.SCORE_FILE).read_text())["count"] == 5
    other = write_dataset(tmp_path / "other", per_class=(1, 0), seed=9) / "train" / "dogs" / "dog.0.png"
    shutil.copy(other, data / "test" / "dogs" / "dog.0.png")  # same name, other contents
    assert sweep(data, logdir) == 0 and len(calls) == 3


def test_with_a_manifest_the_score_follows_the_test_files(tmp_path, monkeypatch):
    data, logdir, calls = split(tmp_path), tmp_path / "logs", scorings(monkeypatch)
    assert sweep(data, logdir) == 0 and len(calls) == 1
    [image] = (data / "test" / "cats").iterdir()  # a PNG data_split.py converted: the manifest has its source's hash
    other = write_dataset(tmp_path / "other", per_class=(1, 0), seed=9) / "train" / "cats" / "cat.0.png"
    shutil.copy(other, image)
    assert sweep(data, logdir) == 0 and len(calls) == 2


def test_a_re_split_during_the_run_is_refused_with_no_score(tmp_path, monkeypatch, capsys):
    data, logdir = split(tmp_path), tmp_path / "logs"
    trained_on, run_search = manifest_sources(data, "train"), loop.run_search

    def then_re_split(*args):
        records = run_search(*args)
        split(tmp_path, 7, "--force")
        return records

    monkeypatch.setattr(loop, "run_search", then_re_split)
    assert sweep(data, logdir) == train.EXIT_NO_TEST_SCORE
    assert manifest_sources(data, "test") & trained_on  # the new test/ holds images the trial trained on
    line = refusal(capsys, "is not the data the chosen model was trained on: its manifest.csv changed since")
    assert "--restart" in line and not (logdir / evaluate.SCORE_FILE).exists()


def test_with_a_manifest_a_test_folder_that_is_not_its_test_split_is_refused(tmp_path, capsys):
    data, logdir = split(tmp_path), tmp_path / "logs"
    assert sweep(data, logdir) == 0
    scored = (logdir / evaluate.SCORE_FILE).read_text()
    added = data / "test" / "cats" / "mine.png"
    shutil.copy(write_dataset(tmp_path / "other", per_class=(1, 0), seed=9) / "train" / "cats" / "cat.0.png", added)
    assert sweep(data, logdir) == train.EXIT_NO_TEST_SCORE
    refusal(capsys, f"is not the test split of {data / 'manifest.csv'} (in one and not the other: 1 files, "
                    "e.g. test/cats/mine.png)")
    assert (logdir / evaluate.SCORE_FILE).read_text() == scored
    added.unlink()
    assert sweep(data, logdir) == 0


def test_without_a_manifest_a_test_image_that_is_a_training_image_is_refused(tmp_path, capsys):
    data, logdir = with_test_split(tmp_path), tmp_path / "logs"
    shutil.copy(data / "validation" / "dogs" / "dog.2.png", data / "test" / "dogs" / "new.png")
    assert sweep(data, logdir) == train.EXIT_NO_TEST_SCORE
    line = refusal(capsys, f"{data / 'test/dogs/new.png'} is the same image as {data / 'validation/dogs/dog.2.png'}")
    assert "remove them" in line and not (logdir / evaluate.SCORE_FILE).exists()
