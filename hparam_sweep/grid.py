"""The grid: hparam domains (hparams.py's declarations) expanded into trials, and --grid overrides."""

import itertools

from tensorboard.plugins.hparams import summary_v2 as hp

from hparam_sweep.common import UsageError


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


def expand_grid(hparams):
    """All combinations, in order, as a list of {name: value} dicts (the last hparam varies fastest)."""
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
