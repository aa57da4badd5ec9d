"""Which configurations are tried (--sampler): each sampler proposes its trials, in trial order, as
search.Trials (run folder name, hparam values, origin); how far each trains is the search's choice
(search.py), so any sampler goes with any search.

- GridSampler: every combination of the domains' grid values (grid.expand_grid), the tutorial's grid.
- RandomSampler: `count` trials, trial i drawn from the domains as they are declared (a Discrete
  domain among its values, a RealInterval continuously, an IntInterval over its integers; those in
  `log_scale` uniformly in the logarithm), by a generator seeded with (seed, i) alone: a rerun with
  a larger count proposes the same first trials, and then more.
- TPESampler: `count` trials proposed by Optuna's TPE (Bergstra et al. 2011) from the results of the
  trials before, `batch` at a time (side by side under --ray). It learns from the records alone, so
  it is a generator of batches (`batches`), each proposed once the records of the ones before are in.

The first two propose all their trials at once (`trials`); a sampler that learns from results
proposes them in batches (`batches`), and the search asks for the next batch once the records of
the one before are in. Plain Python (tensorboard's hparams API does not import TensorFlow; Optuna is
imported only by TPESampler).
"""

import contextlib
import hashlib
import math
import random
import warnings

from tensorboard.plugins.hparams import summary_v2 as hp

from hparam_sweep import grid, metrics, naming
from hparam_sweep.common import UsageError
from hparam_sweep.search import Trial


class GridSampler:
    """Every combination of the grid, in grid order (the last hparam varies fastest)."""

    def __init__(self, hparams):
        self.hparams = hparams

    def describe(self):
        """What experiment.json records of it besides the search: nothing (the one sampler of older logdirs)."""
        return {}

    def domains(self):
        """The domains as experiment.json records them: each hparam's grid values."""
        return {h.name: grid.grid_values(h) for h in self.hparams}

    def trials(self, logdir):
        """The grid's Trials, each in its run folder in logdir (an older run's, under its old name, where one exists)."""
        return [Trial(naming.run_folder(logdir, values).name, values, {"sampler": "grid", "index": i})
                for i, values in enumerate(grid.expand_grid(self.hparams))]


class RandomSampler:
    """`count` trials drawn at random from the domains, trial i by a generator seeded with (seed, i)."""

    def __init__(self, hparams, log_scale, seed, count):
        check_log_scale(hparams, log_scale)
        self.hparams, self.log_scale, self.seed, self.count = hparams, set(log_scale), seed, count

    def describe(self):
        # Not the count: a rerun that asks for more trials continues the same experiment.
        return {"sampler": "random"}

    def domains(self):
        return declared_domains(self.hparams, self.log_scale)

    def values(self, index):
        """Trial `index`'s hparam values: one draw per hparam, in declared order, from random.Random
        seeded with (seed, index), whose random() Python keeps the same across versions."""
        rng = random.Random(f"{self.seed}-{index}")
        return {h.name: draw(h.domain, rng.random(), h.name in self.log_scale) for h in self.hparams}

    def trials(self, logdir):
        """The first `count` trials (logdir plays no part: a sampled trial has no older name)."""
        trials = []
        for i in range(self.count):
            values = self.values(i)
            trials.append(Trial(naming.sampled_name(i, values), values, {"sampler": "random", "index": i}))
        return trials


def draw(domain, u, log=False):
    """The domain's value at u, uniform in [0, 1): a Discrete domain's values equally likely, a
    RealInterval's continuum, an IntInterval's integers; with log, an interval uniformly in the logarithm."""
    if isinstance(domain, hp.Discrete):
        return domain.values[int(u * len(domain.values))]
    integers = isinstance(domain, hp.IntInterval)
    low, high = domain.min_value, domain.max_value + (1 if integers else 0)  # [low, high): every integer its share
    x = math.exp(math.log(low) + u * (math.log(high) - math.log(low))) if log else low + u * (high - low)
    return min(int(x), domain.max_value) if integers else float(x)


# Optuna's default is 10 random trials before TPE models the results; our searches are a few dozen
# trials, which TPE serves better when it starts modelling sooner: after one default batch.
TPE_STARTUP_TRIALS = 4


class TPESampler:
    """`count` trials proposed by Optuna's TPESampler, `batch` at a time, from the records alone.

    The logdir is the only storage: trial i is asked of a study rebuilt, in trial order, from the
    trials of the batches before it (a success told its objective's value, a failure told as
    failed) and its batch-mates before it (told as running: TPE's constant liar keeps a batch
    apart), by a TPESampler seeded with (seed, i). So trial i depends on those records alone, never
    on which trial of a batch finished first, nor on whether the run was killed and resumed.
    """

    def __init__(self, hparams, log_scale, seed, count, batch, objective=metrics.DEFAULT_OBJECTIVE):
        check_log_scale(hparams, log_scale)
        self.optuna = import_optuna()
        self.hparams, self.log_scale, self.seed, self.count, self.batch = hparams, set(log_scale), seed, count, batch
        self.objective = objective  # a success is told its value, which the study maximizes or minimizes
        self.distributions = {h.name: self.distribution(h.domain, h.name in self.log_scale) for h in hparams}

    def describe(self):
        # Not the count (more --trials continues the search); the batch and Optuna's version change
        # what is proposed.
        return {"sampler": "tpe", "tpe_batch": self.batch, "optuna": self.optuna.__version__}

    def domains(self):
        return declared_domains(self.hparams, self.log_scale)

    def distribution(self, domain, log):
        """The Optuna distribution of an hparams-API domain."""
        d = self.optuna.distributions
        if isinstance(domain, hp.Discrete):
            return d.CategoricalDistribution(list(domain.values))
        kind = d.IntDistribution if isinstance(domain, hp.IntInterval) else d.FloatDistribution
        return kind(domain.min_value, domain.max_value, log=log)

    def batches(self, records):
        """The Trials, `batch` at a time; `records` ({name: record}) must hold every earlier batch's
        records when the next is asked for."""
        told = []
        for start in range(0, self.count, self.batch):
            asked, ended = [], [(t, records[t.name]) for t in told]
            for index in range(start, min(start + self.batch, self.count)):
                values = self.values(index, ended, asked)
                asked.append(Trial(naming.sampled_name(index, values), values, {"sampler": "tpe", "index": index}))
            yield asked
            told += asked

    def values(self, index, told, asked):
        """Trial `index`'s values, asked of the study of the `told` (Trial, record) pairs and the `asked` Trials."""
        with quiet(self.optuna):
            return self.study(index, told, asked).ask(self.distributions).params

    def study(self, index, told, asked):
        """The in-memory study that trial `index` is asked of: the told trials as they ended (a success
        with its objective's value, a failure as failed), then the asked ones as running."""
        optuna = self.optuna
        state, frozen = optuna.trial.TrialState, optuna.trial.create_trial
        seed = int(hashlib.sha256(f"{self.seed}-{index}".encode()).hexdigest()[:8], 16)
        direction = "maximize" if self.objective.maximize else "minimize"
        study = optuna.create_study(direction=direction, sampler=optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=TPE_STARTUP_TRIALS, constant_liar=True))
        for t, record in told:
            if record["status"] == "success":
                study.add_trial(frozen(params=t.values, distributions=self.distributions,
                                       value=record["metrics"][self.objective.key]))
            else:
                study.add_trial(frozen(params=t.values, distributions=self.distributions, state=state.FAIL))
        for t in asked:
            study.add_trial(frozen(params=t.values, distributions=self.distributions, state=state.RUNNING))
        return study


def import_optuna():
    """Optuna, or the one line that says how to install it."""
    try:
        import optuna
    except ModuleNotFoundError as e:
        if e.name != "optuna":
            raise
        raise UsageError('--sampler tpe needs Optuna: pip install -e ".[tpe]"') from None
    return optuna


@contextlib.contextmanager
def quiet(optuna):
    """Optuna without its line per study created and its warnings about experimental options."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def check_log_scale(hparams, log_scale):
    """A UsageError unless every name in LOG_SCALE is an hparam whose interval starts above 0."""
    unknown = set(log_scale) - {h.name for h in hparams}
    if unknown:
        raise UsageError(f"hparams.py: LOG_SCALE names {', '.join(sorted(unknown))}, which is no hparam")
    for h in hparams:
        if h.name in log_scale and not isinstance(h.domain, hp.Discrete) and h.domain.min_value <= 0:
            raise UsageError(f"hparams.py: {h.name} is log-scaled, so its domain must start above 0 "
                             f"(it starts at {h.domain.min_value})")


def declared_domains(hparams, log_scale):
    """The domains as a sampler draws from them, as experiment.json records them: a Discrete domain's
    values, an interval's kind and ends, and whether it is log-scaled."""
    described = {}
    for h in hparams:
        if isinstance(h.domain, hp.Discrete):
            described[h.name] = list(h.domain.values)
        else:
            kind = "int" if isinstance(h.domain, hp.IntInterval) else "real"
            described[h.name] = {kind: [h.domain.min_value, h.domain.max_value], "log": h.name in log_scale}
    return described
