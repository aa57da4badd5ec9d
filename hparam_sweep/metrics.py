"""Metric names: one constant per tag, so that the Keras metric, the event tag, results.csv's
column and the dashboard's hp.Metric agree.

The Keras TensorBoard callback's tags `epoch_accuracy` and `epoch_loss` are written into each
run's `train/` and `validation/` folders; the summary metrics into the run folder itself.
"""

# summary_v2 is `hp` without its Keras callback, whose import pulls in TensorFlow (seconds).
from tensorboard.plugins.hparams import summary_v2 as hp

ACCURACY = "accuracy"  # final validation accuracy: the tutorial's metric
BEST_ACCURACY = "best_val_accuracy"
VAL_LOSS = "val_loss"  # final validation loss
WALL_TIME = "wall_time_s"
EPOCHS = "epochs"  # epochs trained: fewer than --epochs for a trial the halving search stopped
EPOCH_ACCURACY = "epoch_accuracy"
EPOCH_LOSS = "epoch_loss"

SUMMARY = [ACCURACY, BEST_ACCURACY, VAL_LOSS, WALL_TIME, EPOCHS]

METRICS = [
    hp.Metric(ACCURACY, display_name="Accuracy (final val)"),
    hp.Metric(BEST_ACCURACY, display_name="Best val accuracy"),
    hp.Metric(VAL_LOSS, display_name="Val loss (final)"),
    hp.Metric(WALL_TIME, display_name="Wall time (s)"),
    hp.Metric(EPOCHS, display_name="Epochs trained"),
    hp.Metric(EPOCH_ACCURACY, group="validation", display_name="Val accuracy (curve)"),
    hp.Metric(EPOCH_LOSS, group="validation", display_name="Val loss (curve)"),
    hp.Metric(EPOCH_ACCURACY, group="train", display_name="Train accuracy (curve)"),
    hp.Metric(EPOCH_LOSS, group="train", display_name="Train loss (curve)"),
]
