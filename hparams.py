"""The search space: hyperparameter domains, metric names and the grid expansion.

Edit the domains below to change the grid that `python train.py` runs, or override one
for a single run from the command line:

    python train.py --grid optimizer=adam,rmsprop --grid learning_rate=0.001

The default grid is the TensorBoard HParams tutorial's: 2 x 2 x 3 x 3 = 36 trials.
"""

import itertools

# summary_v2 is `hp` without its Keras callback, whose import pulls in TensorFlow (seconds).
from tensorboard.plugins.hparams import summary_v2 as hp

from common import UsageError

HP_NUM_UNITS = hp.HParam("num_units", hp.Discrete([256, 512]))
HP_DROPOUT = hp.HParam("dropout", hp.RealInterval(0.1, 0.2))
HP_OPTIMIZER = hp.HParam("optimizer", hp.Discrete(["adam", "sgd", "rmsprop"]))
HP_LEARNING_RATE = hp.HParam("learning_rate", hp.Discrete([0.001, 0.0005, 0.0001]))

HPARAMS = [HP_NUM_UNITS, HP_DROPOUT, HP_OPTIMIZER, HP_LEARNING_RATE]

# Run folder names, which the dashboard shows as Trial IDs in a narrow column: these hparams
# first, in this order, each value after its short label (adam-lr0.001-u256-d0.1), so that the
# values that tell trials apart come first. An hparam not listed follows, labelled by its name.
NAME_LABELS = {"optimizer": "", "learning_rate": "lr", "num_units": "u", "dropout": "d"}

# Metric tags. The Keras TensorBoard callback writes `epoch_accuracy` and `epoch_loss` into each
# run's `train/` and `validation/` folders; train.py writes the summary metrics into the run
# folder itself. One constant per tag so the Keras name, the event tag and hp.Metric agree.
METRIC_ACCURACY = "accuracy"  # final validation accuracy: the tutorial's metric
METRIC_BEST_ACCURACY = "best_val_accuracy"
METRIC_VAL_LOSS = "val_loss"  # final validation loss
METRIC_WALL_TIME = "wall_time_s"
METRIC_EPOCHS = "epochs"  # epochs trained: fewer than --epochs for a trial the halving search stopped
EPOCH_ACCURACY = "epoch_accuracy"
EPOCH_LOSS = "epoch_loss"

SUMMARY_METRICS = [METRIC_ACCURACY, METRIC_BEST_ACCURACY, METRIC_VAL_LOSS, METRIC_WALL_TIME, METRIC_EPOCHS]

METRICS = [
    hp.Metric(METRIC_ACCURACY, display_name="Accuracy (final val)"),
    hp.Metric(METRIC_BEST_ACCURACY, display_name="Best val accuracy"),
    hp.Metric(METRIC_VAL_LOSS, display_name="Val loss (final)"),
    hp.Metric(METRIC_WALL_TIME, display_name="Wall time (s)"),
    hp.Metric(METRIC_EPOCHS, display_name="Epochs trained"),
    hp.Metric(EPOCH_ACCURACY, group="validation", display_name="Val accuracy (curve)"),
    hp.Metric(EPOCH_LOSS, group="validation", display_name="Val loss (curve)"),
    hp.Metric(EPOCH_ACCURACY, group="train", display_name="Train accuracy (curve)"),
    hp.Metric(EPOCH_LOSS, group="train", display_name="Train loss (curve)"),
]


class GridError(UsageError):
    """A `--grid` override that names no hparam or holds a value of the wrong type."""


def grid_values(hparam):
    """The values one hparam contributes to the grid.

    A Discrete domain gives all its values; a RealInterval gives its two ends, as the tutorial
    did (dropout 0.1 and 0.2); an IntInterval gives every integer in it.
    """
    domain = hparam.domain
    if isinstance(domain, hp.Discrete):
        return list(domain.values)
    if isinstance(domain, hp.RealInterval):
        return [domain.min_value, domain.max_value]
    if isinstance(domain, hp.IntInterval):
        return list(range(domain.min_value, domain.max_value + 1))
    raise GridError(f"hparam {hparam.name!r} has no domain to expand")


def expand_grid(hparams=None):
    """All combinations, in order, as a list of {name: value} dicts (the last hparam varies fastest)."""
    hparams = HPARAMS if hparams is None else hparams
    names = [h.name for h in hparams]
    return [dict(zip(names, values)) for values in itertools.product(*map(grid_values, hparams))]


def _parse_value(text, dtype, name):
    try:
        if dtype is bool:
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        return dtype(text)
    except ValueError:
        raise GridError(f"--grid {name}: {text!r} is not of type {dtype.__name__}") from None


def override(hparams, specs):
    """Apply `NAME=V1,V2,...` overrides; each replaces that hparam's domain with Discrete(values).

    Values are parsed to the type of the hparam's declared domain (int, float, str or bool).
    """
    by_name = {h.name: h for h in hparams}
    for spec in specs:
        name, sep, values = spec.partition("=")
        name = name.strip()
        if not sep or not values.strip():
            raise GridError(f"--grid {spec!r}: write NAME=V1,V2,... (for example optimizer=adam,sgd)")
        if name not in by_name:
            raise GridError(f"--grid: unknown hparam {name!r}; known: {', '.join(by_name)}")
        dtype = by_name[name].domain.dtype
        parsed = [_parse_value(v.strip(), dtype, name) for v in values.split(",") if v.strip()]
        by_name[name] = hp.HParam(name, hp.Discrete(list(dict.fromkeys(parsed))))
    return [by_name[h.name] for h in hparams]
