"""The search space: the hyperparameter domains that `python train.py` searches.

Edit the domains below to change the search, or override one for a single run from the command line:

    python train.py --grid optimizer=adam,rmsprop --grid learning_rate=0.001
    python train.py --sampler random --trials 20
    python train.py --sampler tpe --trials 20

The grid (the default --sampler) takes a RealInterval's two ends, an IntInterval's every integer and a
Discrete domain's every value; the default grid is the TensorBoard HParams tutorial's: 2 x 2 x 3 x 3
= 36 trials. --sampler random and tpe draw each trial's values from the domains as declared: a
Discrete domain among its values, a RealInterval continuously, an IntInterval over its integers. An
hparam named in LOG_SCALE is drawn uniformly in its logarithm (each decade as likely) once its domain
is an interval, e.g. hp.RealInterval(0.0001, 0.01); a Discrete domain's values stay equally likely.
A --grid override always makes a Discrete domain of the values it lists.
The model that uses them is hparam_sweep/model.py's build_model, or --model-file's.
"""

from tensorboard.plugins.hparams import summary_v2 as hp

HP_NUM_UNITS = hp.HParam("num_units", hp.Discrete([256, 512]))
HP_DROPOUT = hp.HParam("dropout", hp.RealInterval(0.1, 0.2))
HP_OPTIMIZER = hp.HParam("optimizer", hp.Discrete(["adam", "sgd", "rmsprop"]))
HP_LEARNING_RATE = hp.HParam("learning_rate", hp.Discrete([0.001, 0.0005, 0.0001]))

HPARAMS = [HP_NUM_UNITS, HP_DROPOUT, HP_OPTIMIZER, HP_LEARNING_RATE]
LOG_SCALE = {"learning_rate"}  # drawn log-uniformly by --sampler random and tpe, once its domain is an interval
