"""The experiment's own runs (report.py), through TensorBoard's own API: the chosen model on the test
split (confusion matrix, its most confidently wrong images, a PR curve) and the summary text, beside
the trials and never an HParams session."""

import json
import urllib.parse

from conftest import snapshot, write_dataset
from test_evaluate import ONE, with_test_split
from test_train import FAST

import train
from hparam_sweep import evaluate, report

TWO = [*ONE[:-4], "--grid", "optimizer=adam,sgd", *ONE[-2:]]


def sweep(data, logdir):
    return train.main(["--data", str(data), "--logdir", str(logdir), "--no-cache", *FAST, *TWO])


def test_the_chosen_model_and_the_summary_are_runs_of_their_own(tmp_path, tensorboard):
    data, logdir = with_test_split(tmp_path), tmp_path / "logs"
    assert sweep(data, logdir) == 0
    score = json.loads((logdir / evaluate.SCORE_FILE).read_text())

    api = tensorboard(logdir)
    groups = api.wait_for(2)
    sessions = {s["name"] for g in groups for s in g["sessions"]}
    assert len(sessions) == 2 and not any(report.CHOSEN_RUN in s or report.SUMMARY_RUN in s for s in sessions)
    api.wait_for_plugins(["images", "pr_curves", "text", "graphs"])
    graphs = api.get("plugin/graphs/info")
    assert {run for run, info in graphs.items() if info["tags"].get("keras", {}).get("conceptual_graph")} == {
        g["name"] for g in groups}  # every trial's model in the Graphs tab, nothing else there
    assert {run for run, info in graphs.items() if info["run_graph"]} == {
        g["name"] for g in groups}  # and the op graph of its training step

    images = api.get("plugin/images/tags")
    assert "confusion matrix" in images[report.CHOSEN_RUN]
    wrong = images[report.CHOSEN_RUN].get("most confidently wrong", {}).get("samples", 0)
    assert wrong == min(report.MOST_WRONG, score["count"] - score["correct"])
    assert list(api.get("plugin/pr_curves/tags")) == [report.CHOSEN_RUN]
    assert list(api.get("plugin/pr_curves/tags")[report.CHOSEN_RUN]) == ["dog/pr_curves"]
    text_tags = api.get("plugin/text/tags")
    assert text_tags[report.SUMMARY_RUN] == ["experiment summary"]
    assert "confusion counts" in text_tags[report.CHOSEN_RUN]
    query = urllib.parse.urlencode({"run": report.SUMMARY_RUN, "tag": "experiment summary"})
    [summary] = api.get(f"plugin/text/text?{query}")
    assert score["trial"] in summary["text"] and f"{score['test_accuracy']:.4f}" in summary["text"]
    assert all(row["name"] in summary["text"] for row in groups)

    # A rerun that changes nothing leaves the chosen model's run as it is; a changed test file remakes it.
    before = snapshot(logdir / report.CHOSEN_RUN)
    assert sweep(data, logdir) == 0
    assert snapshot(logdir / report.CHOSEN_RUN) == before
    other = write_dataset(tmp_path / "other", per_class=(1, 0), seed=9) / "train" / "dogs" / "dog.0.png"
    (data / "test" / "dogs" / "dog.0.png").write_bytes(other.read_bytes())
    assert sweep(data, logdir) == 0
    assert snapshot(logdir / report.CHOSEN_RUN) != before
    assert not list(logdir.glob(".*.tmp")) and not list(logdir.glob(".*.old"))


def test_the_confusion_matrix_and_the_most_confidently_wrong_are_counted_right():
    import numpy as np

    labels = np.array([0, 0, 1, 1, 2])
    probabilities = np.array([[.9, .1, 0], [.2, .7, .1], [.1, .8, .1], [.6, .3, .1], [.1, .1, .8]])
    assert report.confusion(labels, probabilities.argmax(axis=1), 3).tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    images = np.zeros((5, 8, 8, 3), np.uint8)
    wrong = report.most_confidently_wrong(images, labels, probabilities, ["a", "b", "c"])
    assert wrong == [(1, "true a, predicted b (0.70)"), (3, "true b, predicted a (0.60)")]


def test_a_trials_graph_is_written_once_however_often_it_starts(tmp_path):
    import keras
    import tensorflow as tf

    from hparam_sweep import runlog

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    for _ in range(3):  # a trial resumed twice
        runlog.write_graph(tmp_path, model)
    graphs = [e for f in tmp_path.glob("events.out.tfevents*") for e in tf.compat.v1.train.summary_iterator(str(f))
              if any(v.tag == runlog.GRAPH_TAG for v in e.summary.value)]
    assert len(graphs) == 1 and runlog.has_graph(tmp_path)
