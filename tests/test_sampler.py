"""sampler.py and naming.py: which configurations are tried, and their names; plain Python, no TensorFlow."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.plugins.hparams import summary_v2 as hp

import hparams as H
from hparam_sweep import metrics as M, naming, sampler
from hparam_sweep.common import UsageError

SPACE = [hp.HParam("units", hp.IntInterval(1, 4)), hp.HParam("dropout", hp.RealInterval(0.1, 0.2)),
         hp.HParam("optimizer", hp.Discrete(["adam", "sgd"])), hp.HParam("learning_rate", hp.RealInterval(1e-4, 1e-2))]


def draws(count, log_scale=(), seed=1):
    return [t.values for t in sampler.RandomSampler(SPACE, log_scale, seed, count).trials(Path("logs"))]


def test_trial_i_depends_only_on_the_seed_and_i():
    trials = sampler.RandomSampler(H.HPARAMS, H.LOG_SCALE, 1, 6).trials(Path("logs"))
    assert trials[:4] == sampler.RandomSampler(H.HPARAMS, H.LOG_SCALE, 1, 4).trials(Path("elsewhere"))
    assert [t.origin for t in trials] == [{"sampler": "random", "index": i} for i in range(6)]
    other_seed = sampler.RandomSampler(H.HPARAMS, H.LOG_SCALE, 2, 6).trials(Path("logs"))
    assert [t.values for t in trials] != [t.values for t in other_seed]
    # Pinned: random.Random's seeding by a string and its random() are kept across Python versions, so a
    # logdir's sampled trials keep their names for good.
    assert trials[0].name == "000-adam-lr0.0001-u512-d0.13-c3354045"


def test_each_domain_is_sampled_as_declared():
    values = draws(400)
    assert {v["units"] for v in values} == {1, 2, 3, 4} and all(type(v["units"]) is int for v in values)
    assert {v["optimizer"] for v in values} == {"adam", "sgd"}
    dropouts = [v["dropout"] for v in values]
    assert all(0.1 < d < 0.2 for d in dropouts) and len(set(dropouts)) == 400  # continuously, not its two ends
    assert min(dropouts) < 0.11 and max(dropouts) > 0.19


def test_a_log_scaled_interval_is_uniform_in_its_logarithm():
    linear = [v["learning_rate"] for v in draws(400)]
    logarithmic = [v["learning_rate"] for v in draws(400, log_scale={"learning_rate"})]
    assert all(1e-4 <= x < 1e-2 for x in linear + logarithmic)
    # Below 1e-3, the first of two decades: about half log-uniformly, about a tenth uniformly.
    assert 0.4 < sum(x < 1e-3 for x in logarithmic) / 400 < 0.6
    assert sum(x < 1e-3 for x in linear) / 400 < 0.15
    # The other hparams draw the same values either way.
    assert [v["dropout"] for v in draws(50)] == [v["dropout"] for v in draws(50, log_scale={"learning_rate"})]


def test_log_scale_over_integers_and_a_discrete_domain():
    assert sampler.draw(hp.IntInterval(1, 100), 0.0, log=True) == 1
    assert sampler.draw(hp.IntInterval(1, 100), 0.999999, log=True) == 100
    assert sampler.draw(hp.Discrete([0.1, 0.01]), 0.0, log=True) == 0.01  # its values stay equally likely


@pytest.mark.parametrize("log_scale, message", [({"lr"}, "LOG_SCALE names lr, which is no hparam"),
                                                ({"dropout"}, "dropout is log-scaled, so its domain must start above 0")])
def test_a_log_scale_that_cannot_be_is_a_usage_error(log_scale, message):
    space = [hp.HParam("dropout", hp.RealInterval(0.0, 0.5))]
    with pytest.raises(UsageError, match=message):
        sampler.RandomSampler(space, log_scale, 1, 4)


def test_sampled_names_read_well_and_are_unique():
    trials = sampler.RandomSampler(SPACE, {"learning_rate"}, 7, 200).trials(Path("logs"))
    names = [t.name for t in trials]
    assert len(set(names)) == 200 and all(len(n) <= naming.MAX_NAME for n in names)
    assert all(n.startswith(f"{i:03d}-") for i, n in enumerate(names))
    values = {"optimizer": "adam", "learning_rate": 0.000421337, "units": 3, "dropout": 0.15321}
    assert naming.sampled_name(7, values) == f"007-adam-lr0.00042-d0.15-units3-{naming.digest(values)}"
    # Trial 7 drawn from a changed domain is another trial, in another folder, however it rounds.
    assert naming.sampled_name(7, {**values, "dropout": 0.15322}) != naming.sampled_name(7, values)


def test_the_grid_sampler_proposes_the_grid_in_order_under_the_names_it_always_had(tmp_path):
    trials = sampler.GridSampler(H.HPARAMS).trials(tmp_path)
    assert len(trials) == 36 and trials[0].name == "adam-lr0.0001-u256-d0.1"
    assert trials[5].origin == {"sampler": "grid", "index": 5}
    old = tmp_path / naming.old_trial_name(trials[5].values)
    old.mkdir()
    (old / naming.TRIAL_FILE).write_text("{}")
    assert sampler.GridSampler(H.HPARAMS).trials(tmp_path)[5].name == old.name  # an older run's folder, in place


def test_naming_and_sampling_do_not_import_tensorflow():
    code = ("import sys; from hparam_sweep import naming, sampler, search; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(sampler.__file__).parents[1])


TPE_SPACE = [hp.HParam("optimizer", hp.Discrete(["adam", "sgd", "rmsprop"])),
             hp.HParam("learning_rate", hp.RealInterval(1e-4, 1e-2)), hp.HParam("dropout", hp.RealInterval(0.1, 0.5)),
             hp.HParam("num_units", hp.IntInterval(128, 512))]


def score(values):
    """A stand-in trial: adam near lr 1e-3 scores best; rmsprop fails."""
    if values["optimizer"] == "rmsprop":
        return {"status": "failure", "error": "loss became NaN"}
    accuracy = 0.9 - abs(math.log10(values["learning_rate"]) + 3) / 4 - (0.2 if values["optimizer"] == "sgd" else 0)
    return {"status": "success", "metrics": {M.ACCURACY: accuracy}}


def tpe_search(count, batch=2, seed=1, finish=lambda batch: batch, before=None):
    """Run a TPESampler to the end on the stand-in trials; `before` ({name: record}) are records that
    an earlier run left (a rerun reuses them); `finish` orders a batch as its trials finish."""
    tpe = sampler.TPESampler(TPE_SPACE, {"learning_rate"}, seed, count, batch)
    records, trials = {}, []
    for proposed in tpe.batches(records):
        for t in finish(proposed):
            records[t.name] = (before or {}).get(t.name) or score(t.values)
        trials += proposed
    return trials, records


def test_tpe_proposes_inside_the_domains_and_learns_from_the_results():
    trials, records = tpe_search(24, batch=4)
    assert [t.origin for t in trials] == [{"sampler": "tpe", "index": i} for i in range(24)]
    assert all(t.name.startswith(f"{i:03d}-") for i, t in enumerate(trials))
    for t in trials:
        v = t.values
        assert 1e-4 <= v["learning_rate"] <= 1e-2 and 0.1 <= v["dropout"] <= 0.5 and 128 <= v["num_units"] <= 512
        assert type(v["num_units"]) is int and v["optimizer"] in ("adam", "sgd", "rmsprop")
    # After its random start, TPE goes where the results are good: adam, lr near 1e-3, few failures.
    modelled = trials[sampler.TPE_STARTUP_TRIALS:]
    assert sum(t.values["optimizer"] == "adam" for t in modelled) > len(modelled) / 2
    random_draws = [t.values for t in sampler.RandomSampler(TPE_SPACE, {"learning_rate"}, 1, 20).trials(Path("x"))]
    def near(values):
        return sum(abs(math.log10(v["learning_rate"]) + 3) < 0.5 for v in values)
    assert near([t.values for t in modelled]) > near(random_draws)


def test_a_rebuilt_tpe_study_proposes_what_an_uninterrupted_one_does_whatever_finished_first():
    # 60 trials: past 25, Optuna's TPE weighs later trials more, so the order it is told them in counts.
    trials, records = tpe_search(60, batch=10)
    # Each batch's trials finishing in reverse order: the same proposals (told in trial order).
    assert tpe_search(60, batch=10, finish=lambda batch: batch[::-1])[0] == trials
    # A rerun after a kill: the first 45 trials' records are the logdir's, the rest run again.
    kept = {t.name: records[t.name] for t in trials[:45]}
    assert tpe_search(60, batch=10, before=kept)[0] == trials
    # More trials later continue the same search; another seed is another search.
    assert tpe_search(64, batch=10)[0][:60] == trials
    assert [t.values for t in tpe_search(60, batch=10, seed=2)[0]] != [t.values for t in trials]


def test_a_failed_trial_is_told_as_failed_and_a_batch_mate_as_running():
    trials, records = tpe_search(6)
    tpe = sampler.TPESampler(TPE_SPACE, {"learning_rate"}, 1, 6, 2)
    told = [(t, records[t.name]) for t in trials[:4]]
    study = tpe.study(5, told, trials[4:5])
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL" if r["status"] == "failure" else "COMPLETE" for _, r in told] + ["RUNNING"]
    assert "FAIL" in states  # the stand-in fails rmsprop: one is among the first four
    assert [t.value for t in study.trials[:4] if t.state.name == "COMPLETE"] == [
        r["metrics"][M.ACCURACY] for _, r in told if r["status"] == "success"]


def test_tpe_without_optuna_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    with pytest.raises(UsageError, match=r'--sampler tpe needs Optuna: pip install -e "\.\[tpe\]"'):
        sampler.TPESampler(TPE_SPACE, set(), 1, 4, 2)


def test_tpe_is_told_the_objective_and_its_direction():
    """--objective val_loss: each success is told its validation loss, and the study minimizes it."""
    trials, _ = tpe_search(4)
    told = [(t, {"status": "success", "metrics": {M.ACCURACY: 0.5 + i / 10, M.VAL_LOSS: 1 - i / 10}})
            for i, t in enumerate(trials)]
    for name, direction, key in [("val_loss", "MINIMIZE", M.VAL_LOSS), ("val_accuracy", "MAXIMIZE", M.ACCURACY)]:
        study = sampler.TPESampler(TPE_SPACE, {"learning_rate"}, 1, 6, 2, M.objective(name)).study(4, told, [])
        assert study.direction.name == direction
        assert [t.value for t in study.trials] == [r["metrics"][key] for _, r in told]
