"""Run folder names, which the dashboard shows as Trial IDs: plain Python, no TensorFlow, so that a
search can name the trials it proposes.

A grid trial is named by its values (adam-lr0.001-u256-d0.1), a sampled one by its index, its values
rounded for reading and a hash of the exact values (007-adam-lr0.00042-u384-d0.15-1a2b3c4d).
"""

import hashlib
import json
import re

TRIAL_FILE = "trial.json"
# These hparams first, in this order, each value after its short label (adam-lr0.001-u256-d0.1), so
# that the values that tell trials apart come first in the dashboard's narrow Trial ID column. An
# hparam not listed follows, labelled by its name.
NAME_LABELS = {"optimizer": "", "learning_rate": "lr", "num_units": "u", "dropout": "d"}
# A string value is used as it is only when it is safe in a folder name on Linux, macOS and
# Windows and cannot run into another value: lower case (macOS and Windows ignore case), no "-"
# (the separator), no leading or trailing dot, short.
PLAIN_STRING = re.compile(r"[a-z0-9_+]([a-z0-9._+]{0,18}[a-z0-9_+])?")
WINDOWS_RESERVED = re.compile(r"(con|prn|aux|nul|com\d|lpt\d)(\..*)?", re.IGNORECASE)
MAX_NAME = 60
SAMPLED_DIGITS = 2  # significant digits of a sampled number in its trial's name


def digest(values):
    """8 hex digits that tell any two sets of hparam values apart."""
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:8]


def readable(values, number=repr):
    """(the values joined in NAME_LABELS' order, whether the text tells them all exactly); `number`
    writes an int or float."""
    order = [*(n for n in NAME_LABELS if n in values), *(n for n in values if n not in NAME_LABELS)]
    parts, exact = [], True
    for name in order:
        value = values[name]
        if isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, (int, float)):
            text = number(value)
        else:
            text = str(value)
            if not PLAIN_STRING.fullmatch(text):
                exact = False
                text = re.sub(r"[^a-z0-9_+]+", "_", text.lower())[:20] or "_"
        parts.append(NAME_LABELS.get(name, name) + text)
    return "-".join(parts), exact


def trial_name(values):
    """A grid trial's run folder name and dashboard Trial ID, e.g. adam-lr0.001-u256-d0.1: NAME_LABELS'
    order, unique per combination, the same whatever else is in the grid, valid on every OS.

    Numbers are written as Python's repr (the shortest form that reads back as the same float);
    a string that is not plain is written with unsafe characters replaced, and the name then ends
    in a hash of all the values, so that "a/b" and "a_b" still get different names.
    """
    name, exact = readable(values)
    if not exact or len(name) > MAX_NAME or WINDOWS_RESERVED.fullmatch(name):
        name = f"{name[:MAX_NAME - 9]}-{digest(values)}"
    return name


def sampled_name(index, values):
    """A sampled trial's name, e.g. 007-adam-lr0.00042-u384-d0.15-1a2b3c4d: its index (the dashboard
    sorts by it), its values rounded to SAMPLED_DIGITS for reading, and the hash of the exact values,
    so that trial 7 drawn from a changed domain is another trial."""
    text, _ = readable(values, lambda v: repr(v) if isinstance(v, int) else f"{v:.{SAMPLED_DIGITS}g}")
    return f"{index:03d}-{text[:MAX_NAME - 13]}-{digest(values)}"


def old_trial_name(values):
    """The run folder name of the first releases (num_units=256,dropout=0.1,...): logdirs written then keep working."""
    return ",".join(f"{name}={value}" for name, value in values.items())


def run_folder(logdir, values):
    """A grid trial's run folder in logdir: one of an older run under its old name, used where it is
    (never renamed: it holds the user's results), otherwise trial_name's."""
    old = logdir / old_trial_name(values)
    return old if (old / TRIAL_FILE).exists() else logdir / trial_name(values)
