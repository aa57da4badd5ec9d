"""Which configurations are tried (--sampler): each sampler proposes its trials, in trial order, as
search.Trials (run folder name, hparam values, origin); how far each trains is the search's choice
(search.py), so any sampler goes with any search.

- GridSampler: every combination of the domains' grid values (grid.expand_grid), the tutorial's grid.
- RandomSampler: `count` trials, trial i drawn from the domains as they are declared (a Discrete
  domain among its values, a RealInterval continuously, an IntInterval over its integers; those in
  `log_scale` uniformly in the logarithm), by a generator seeded with (seed, i) alone: a rerun with
  a larger count proposes the same first trials, and then more.

Plain Python (tensorboard's hparams API does not import TensorFlow).
"""

import math
import random

from tensorboard.plugins.hparams import summary_v2 as hp

from hparam_sweep import grid, naming
from hparam_sweep.common import UsageError
from hparam_sweep.search import Trial


class GridSampler:
    """Every combination of the grid, in grid order (the last hparam varies fastest)."""

    def __init__(self, hparams):
        self.hparams = hparams

    def describe(self):
        """What experiment.json records of it besides the search: nothing (the one sampler of older logdirs)."""
        return {}

    def trials(self, logdir):
        """The grid's Trials, each in its run folder in logdir (an older run's, under its old name, where one exists)."""
        return [Trial(naming.run_folder(logdir, values).name, values, {"sampler": "grid", "index": i})
                for i, values in enumerate(grid.expand_grid(self.hparams))]


class RandomSampler:
    """`count` trials drawn at random from the domains, trial i by a generator seeded with (seed, i)."""

    def __init__(self, hparams, log_scale, seed, count):
        unknown = set(log_scale) - {h.name for h in hparams}
        if unknown:
            raise UsageError(f"hparams.py: LOG_SCALE names {', '.join(sorted(unknown))}, which is no hparam")
        for h in hparams:
            if h.name in log_scale and not isinstance(h.domain, hp.Discrete) and h.domain.min_value <= 0:
                raise UsageError(f"hparams.py: {h.name} is log-scaled, so its domain must start above 0 "
                                 f"(it starts at {h.domain.min_value})")
        self.hparams, self.log_scale, self.seed, self.count = hparams, set(log_scale), seed, count

    def describe(self):
        # Not the count: a rerun that asks for more trials continues the same experiment.
        return {"sampler": "random"}

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
