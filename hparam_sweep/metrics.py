"""Metric names: one constant per tag, so that the Keras metric, the event tag, results.csv's
column and the dashboard's hp.Metric agree; and the objective (--objective), the one rule that
ranks trials.

The Keras TensorBoard callback's tags `epoch_accuracy` and `epoch_loss` are written into each
run's `train/` and `validation/` folders; the summary metrics into the run folder itself.
"""

from dataclasses import dataclass

# summary_v2 is `hp` without its Keras callback, whose import pulls in TensorFlow (seconds).
from tensorboard.plugins.hparams import summary_v2 as hp

from hparam_sweep.common import UsageError

ACCURACY = "accuracy"  # final validation accuracy: the tutorial's metric
BEST_ACCURACY = "best_val_accuracy"
VAL_LOSS = "val_loss"  # final validation loss
AUC = "val_auc"  # final validation AUC (--objective val_auc only)
WALL_TIME = "wall_time_s"
EPOCHS = "epochs"  # epochs trained: fewer than --epochs for a trial the halving search or early stopping stopped
STOPPED_EARLY_AT = "stopped_early_at"  # --early-stopping: the epoch it ended the trial at (absent: it did not)
EPOCH_ACCURACY = "epoch_accuracy"
EPOCH_LOSS = "epoch_loss"
EPOCH_AUC = "epoch_auc"

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
AUC_METRICS = [
    hp.Metric(AUC, display_name="AUC (final val)"),
    hp.Metric(EPOCH_AUC, group="validation", display_name="Val AUC (curve)"),
    hp.Metric(EPOCH_AUC, group="train", display_name="Train AUC (curve)"),
]
STOPPED_METRIC = hp.Metric(STOPPED_EARLY_AT, display_name="Stopped early at epoch")


@dataclass(frozen=True)
class Objective:
    """What ranks trials (--objective NAME): ranked results, halving's rungs, best_model.keras,
    early stopping and TPE all order trials by `order`, and nothing else.

    `name` is Keras' name of the validation metric (its history.csv column), `key` the summary metric
    that trial.json, results.csv and the dashboard hold; `maximize` its direction; ties go to
    `tiebreak`, another objective's name; `keras_metric` a metric trial.py compiles into the model for it.
    """

    name: str
    key: str
    maximize: bool
    tiebreak: str
    keras_metric: str | None = None

    def signed(self, value):
        """The value as an order where lower is better."""
        return -value if self.maximize else value

    def order(self, values):
        """The sort key (lower first) of a trial's metrics ({key: value}, e.g. trial.json's metrics)."""
        tie = OBJECTIVES[self.tiebreak]
        return self.signed(values.get(self.key, 0.0)), tie.signed(values.get(tie.key, 0.0))

    def stopped_at(self, values, patience):
        """The epoch (counted from 1) after which early stopping with `patience` ends training, given
        this objective's value after each epoch in turn; None while it goes on. An epoch improves when
        it is strictly better than every epoch before (Keras' EarlyStopping with min_delta 0);
        training stops once `patience` epochs in a row have not."""
        best, since = None, 0
        for epoch, value in enumerate(values, 1):
            if best is None or self.signed(value) < self.signed(best):
                best, since = value, 0
            else:
                since += 1
                if since >= patience:
                    return epoch
        return None


OBJECTIVES = {
    "val_accuracy": Objective("val_accuracy", ACCURACY, maximize=True, tiebreak="val_loss"),
    "val_loss": Objective("val_loss", VAL_LOSS, maximize=False, tiebreak="val_accuracy"),
    # One-vs-rest AUC of each class, averaged (macro); with two classes, the AUC of either.
    "val_auc": Objective("val_auc", AUC, maximize=True, tiebreak="val_loss", keras_metric="auc"),
}
DEFAULT_OBJECTIVE = OBJECTIVES["val_accuracy"]  # the tutorial's ranking


def objective(name):
    """The Objective called `name`, or a UsageError that says which there are."""
    if name in OBJECTIVES:
        return OBJECTIVES[name]
    if f"val_{name}" in OBJECTIVES:
        raise UsageError(f"--objective {name} is measured on the training images, which no trial is ranked on: "
                         f"use --objective val_{name}")
    raise UsageError(f"--objective {name} is not a metric the trials report; choose one of {', '.join(OBJECTIVES)}")


def dashboard(objective_name, early_stopping):
    """The dashboard's hp.Metrics (its hparams_config) for trials with this objective and early stopping."""
    return METRICS + (AUC_METRICS if objective_name == "val_auc" else []) + ([STOPPED_METRIC] if early_stopping else [])


def summary(objective_name, early_stopping):
    """The summary metrics' names, in the dashboard's order: results.csv's metric columns."""
    return [m.as_proto().name.tag for m in dashboard(objective_name, early_stopping) if not m.as_proto().name.group]
