import pytest
from tensorboard.plugins.hparams import api as hp

import hparams as H
from hparam_sweep import grid


def test_default_grid_is_the_tutorials_36_trials():
    trials = grid.expand_grid(H.HPARAMS)
    assert len(trials) == 36
    assert len({tuple(t.items()) for t in trials}) == 36
    assert {t["num_units"] for t in trials} == {256, 512}
    assert {t["dropout"] for t in trials} == {0.1, 0.2}  # a RealInterval gives its two ends
    assert {t["optimizer"] for t in trials} == {"adam", "sgd", "rmsprop"}
    assert {t["learning_rate"] for t in trials} == {0.001, 0.0005, 0.0001}
    assert list(trials[0]) == ["num_units", "dropout", "optimizer", "learning_rate"]
    # The last hparam varies fastest, as itertools.product does.
    assert [t["learning_rate"] for t in trials[:3]] == [0.0001, 0.0005, 0.001]
    assert trials[0]["num_units"] == trials[17]["num_units"] != trials[18]["num_units"]


def test_domains_are_the_tutorials():
    assert H.HP_DROPOUT.domain.min_value == 0.1 and H.HP_DROPOUT.domain.max_value == 0.2
    assert isinstance(H.HP_DROPOUT.domain, hp.RealInterval)
    assert H.HP_NUM_UNITS.domain.values == [256, 512]


def test_override_parses_each_hparams_type():
    hparams = grid.override(H.HPARAMS, ["num_units=32,64", "dropout=0.5", "optimizer=sgd", "learning_rate=1e-2,0.1"])
    trials = grid.expand_grid(hparams)
    assert len(trials) == 4
    assert {type(t["num_units"]) for t in trials} == {int}
    assert {t["learning_rate"] for t in trials} == {0.01, 0.1}
    assert {t["dropout"] for t in trials} == {0.5}
    # The declarations themselves are untouched.
    assert len(grid.expand_grid(H.HPARAMS)) == 36


def test_int_interval_expands_to_every_integer():
    assert grid.expand_grid([hp.HParam("layers", hp.IntInterval(1, 3))]) == [{"layers": 1}, {"layers": 2}, {"layers": 3}]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("units=256", "unknown hparam 'units'"),
        ("num_units=big", "'big' is not of type int"),
        ("learning_rate=fast", "'fast' is not of type float"),
        ("optimizer", "write NAME=V1,V2"),
        ("optimizer=", "write NAME=V1,V2"),
    ],
)
def test_override_errors(spec, message):
    with pytest.raises(grid.GridError, match=message):
        grid.override(H.HPARAMS, [spec])
