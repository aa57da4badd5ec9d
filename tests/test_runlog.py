"""runlog: a run folder's logs, read back whatever else a user logs beside them."""

import subprocess
import sys
from pathlib import Path

from conftest import trial_outcome
from tensorboard.backend.event_processing import event_accumulator

from hparam_sweep import trial

# Op determinism is process-wide and permanent: these trials run in a subprocess.
OWN_LOGGING_AND_NONE = """
import sys
from pathlib import Path
import keras
import numpy as np
import tensorflow as tf
sys.path[:0] = ["tests", "."]
from hparam_sweep import pipeline, trial
from test_trial import VALUES, settings
tf.config.experimental.enable_op_determinism()
dataset, out = map(Path, sys.argv[1:])
data = pipeline.load_data(dataset, 24)
trial.run(VALUES, settings(dataset, epochs=2, deterministic=True), data, out / "plain", epochs=2, verbose=0)


class OwnSummaries(keras.callbacks.Callback):
    '''What a user may log into a trial's train/ and validation/: histograms of every weight (a (30, 3)
    tensor each), an image, text, and scalars of their own, one named like a curve's tag.'''

    def on_train_begin(self, logs=None):
        self.writers = [tf.summary.create_file_writer(str(out / "logged" / g)) for g in ("train", "validation")]

    def on_epoch_end(self, epoch, logs=None):
        for writer in self.writers:
            with writer.as_default(step=epoch):
                for weight in self.model.weights:
                    tf.summary.histogram(weight.path, weight)
                tf.summary.image("samples", np.zeros((1, 8, 8, 3), np.float32))
                tf.summary.text("note", "logged by the user")
                tf.summary.scalar("epoch_learning_rate", 0.01)
                tf.summary.scalar("weight_norm", 1.5)
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self.writers:
            writer.close()


fit = keras.Model.fit
keras.Model.fit = lambda model, *a, callbacks=(), **k: fit(model, *a, callbacks=[*callbacks, OwnSummaries()], **k)
trial.run(VALUES, settings(dataset, epochs=2, deterministic=True), data, out / "logged", epochs=2, verbose=0)
"""


def test_a_trial_that_logs_summaries_of_its_own_keeps_its_curves(dataset, tmp_path):
    """Histograms, images, text and other scalars beside the curves fail no trial and change no curve."""
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", OWN_LOGGING_AND_NONE, str(dataset), str(tmp_path)], cwd=root, check=True)

    record = trial.load(tmp_path / "logged")
    assert record["status"] == "success", record["error"]
    tags = event_accumulator.EventAccumulator(str(tmp_path / "logged" / "train")).Reload().Tags()["tensors"]
    assert {"samples", "note", "weight_norm", "epoch_learning_rate"} < set(tags) and len(tags) > 8  # really there
    logged = trial_outcome(tmp_path / "logged")
    assert logged == trial_outcome(tmp_path / "plain")  # metrics, history.csv and curves, exact
    assert len(logged[2]) == 4 and all([step for step, _ in points] == [0, 1] for points in logged[2].values())


def test_no_histograms_logs_no_weights_and_changes_no_result(dataset, tmp_path, capsys):
    """--no-histograms: no weight histograms in any run; the flag is no setting, so a rerun with them
    on reuses the finished trial as it is."""
    import train
    from hparam_sweep import runlog
    from test_train import FAST, ONE_TRIAL

    argv = ["--data", str(dataset), "--logdir", str(tmp_path / "logs"), "--no-cache", *FAST, *ONE_TRIAL]
    assert train.main([*argv, "--no-histograms"]) == 0
    [run] = [p for p in (tmp_path / "logs").iterdir() if (p / trial.TRIAL_FILE).exists()]
    assert runlog.read_weight_histograms(run) == {} and runlog.read_curves(run)
    capsys.readouterr()
    assert train.main(argv) == 0
    assert "Reusing 1 finished trial(s)" in capsys.readouterr().out


def test_a_trials_histogram_tags_do_not_depend_on_what_its_process_built_before(dataset, tmp_path):
    """Keras names weights from process-wide counters; a trial resumed in a process that had built
    other models first (a Ray worker, a rerun in a long-lived Python) must log under the same tags."""
    import keras

    from hparam_sweep import pipeline, runlog
    from test_trial import VALUES, settings

    data = pipeline.load_data(dataset, 24)
    tags = []
    for run in ("first", "after-other-models"):
        keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])  # takes the names sequential, dense ...
        keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])  # ... then sequential_1, dense_1
        assert trial.run(VALUES, settings(dataset, epochs=1), data, tmp_path / run, verbose=0)["status"] == "success"
        tags.append(sorted(runlog.read_weight_histograms(tmp_path / run)))
    assert tags[0] == tags[1] and len(tags[0]) == 8 and all(t.startswith("sequential/") for t in tags[0])
