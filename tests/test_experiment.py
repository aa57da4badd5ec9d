"""The logdir as an experiment: which earlier trials a rerun reuses, refused settings, --restart."""

import csv
import dataclasses
import json
import re

import pytest
from conftest import snapshot
from tensorboard.plugins.hparams import summary_v2 as hp

from hparam_sweep import experiment, grid, metrics as M, naming, report, trial
import hparams as H
import train
from hparam_sweep.common import UsageError, write_json


def test_changed_grid_reuses_only_matching_trials(dataset, tmp_path, capsys):
    logdir = tmp_path / "logs"
    fast = ["--data", str(dataset), "--logdir", str(logdir), "--image-size", "24", "--batch-size", "8",
            "--epochs", "1", "--steps-per-epoch", "2", "--quiet", "--grid", "num_units=8", "--grid", "dropout=0.1",
            "--grid", "learning_rate=0.01"]
    assert train.main([*fast, "--grid", "optimizer=adam,sgd"]) == 0
    adam = trial.trial_name({"num_units": 8, "dropout": 0.1, "optimizer": "adam", "learning_rate": 0.01})
    before = snapshot(logdir / adam)
    capsys.readouterr()

    assert train.main([*fast, "--grid", "optimizer=adam,rmsprop"]) == 0
    out = capsys.readouterr().out
    assert "Reusing 1 finished trial(s)" in out and "1 to run" in out
    assert "1 other trial(s)" in out  # the sgd trial: kept, but not ranked with this grid
    assert snapshot(logdir / adam) == before
    with (logdir / "results.csv").open(newline="") as f:
        ranked = [row["run"] for row in csv.DictReader(f)]
    assert len(ranked) == 2 and all("sgd" not in r for r in ranked)
    domains = json.loads((logdir / experiment.EXPERIMENT_FILE).read_text())["domains"]
    assert domains["optimizer"] == ["adam", "rmsprop"]

    # Other settings make every earlier trial incomparable: refused, then --restart moves them aside.
    assert train.main([*fast, "--grid", "optimizer=adam", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "epochs 1 -> 2" in err and "--restart" in err
    assert train.main([*fast, "--grid", "optimizer=adam", "--epochs", "2", "--restart"]) == 0
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("logs-before-")]
    assert len(moved) == 1 and snapshot(moved[0] / adam) == before


GRID = {"search": "grid"}


def settings(**changes):
    base = trial.Settings(data="/data", data_fingerprint="abc", image_size=24, batch_size=8, epochs=2, steps_per_epoch=3,
                          seed=42, deterministic=False, mixed_precision=False, xla=False, augment_in_model=False)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("field, value", [("image_size", 32), ("batch_size", 16), ("steps_per_epoch", 4), ("seed", 7),
                                          ("data_fingerprint", "other data"), ("mixed_precision", True), ("epochs", 3)])
def test_each_changed_setting_is_refused(tmp_path, field, value):
    logdir = tmp_path / "logs"
    experiment.prepare(logdir, settings(), H.HPARAMS, GRID)
    experiment.prepare(logdir, settings(), H.HPARAMS, GRID)  # the same settings again: fine
    with pytest.raises(UsageError, match=f"{field} .* -> {value}.*--restart"):
        experiment.prepare(logdir, settings(**{field: value}), H.HPARAMS, GRID)


@pytest.mark.parametrize("damage", ["truncated", "deleted"])
def test_a_damaged_experiment_record_never_lets_other_settings_in(tmp_path, damage):
    """The run folders' own records still tell the settings their trials ran with."""
    logdir = tmp_path / "logs"
    experiment.prepare(logdir, settings(), H.HPARAMS, GRID)
    (logdir / "some-trial").mkdir()
    write_json(logdir / "some-trial" / trial.TRIAL_FILE, {"status": "success", "settings": dataclasses.asdict(settings())})
    path = logdir / experiment.EXPERIMENT_FILE
    if damage == "truncated":
        path.write_text(path.read_text()[:20])
    else:
        path.unlink()
    with pytest.raises(UsageError, match="epochs 2 -> 5.*some-trial"):
        experiment.prepare(logdir, settings(epochs=5), H.HPARAMS, GRID)
    experiment.prepare(logdir, settings(), H.HPARAMS, GRID)  # the matching settings rebuild the record
    assert json.loads(path.read_text())["settings"] == settings().record()


def test_restart_twice_in_one_second_keeps_both(tmp_path):
    logdir = tmp_path / "logs"
    moved = []
    for i in range(3):
        logdir.mkdir()
        (logdir / "results.csv").write_text(f"run {i}\n")
        moved.append(experiment.move_aside(logdir))
    assert len(set(moved)) == 3 and not logdir.exists()
    assert sorted((m / "results.csv").read_text() for m in moved) == ["run 0\n", "run 1\n", "run 2\n"]


def test_the_lock_is_released_when_a_run_is_refused(tmp_path):
    logdir = tmp_path / "logs"
    with pytest.raises(UsageError):
        with experiment.locked(logdir):
            with pytest.raises(UsageError, match="in use by train.py"):
                with experiment.locked(logdir):
                    pass
            raise UsageError("refused")
    with experiment.locked(logdir):  # free again, without waiting for garbage collection
        pass


def test_a_symlink_to_the_logdir_takes_the_same_lock(tmp_path):
    logdir = tmp_path / "logs"
    logdir.mkdir()
    (tmp_path / "link").symlink_to(logdir)
    with experiment.locked(logdir):
        with pytest.raises(UsageError, match="in use by train.py"):
            with experiment.locked(tmp_path / "link"):
                pass


def test_another_search_is_refused(tmp_path):
    logdir = tmp_path / "logs"
    experiment.prepare(logdir, settings(), H.HPARAMS, GRID)
    halving = {"search": "halving", "min_epochs": 1, "halving_rate": 3, "rungs": [1, 2]}
    with pytest.raises(UsageError, match="search with other settings.*--restart"):
        experiment.prepare(logdir, settings(), H.HPARAMS, halving)


@pytest.mark.parametrize("evidence", ["halving.json", "a trial stopped short"])
def test_without_experiment_json_the_search_is_still_checked(tmp_path, evidence):
    logdir = tmp_path / "logs"
    halving = {"search": "halving", "min_epochs": 1, "halving_rate": 3, "rungs": [1, 3, 5]}
    experiment.prepare(logdir, settings(), H.HPARAMS, halving)
    if evidence == "halving.json":
        write_json(logdir / experiment.DECISIONS_FILE, [{"epochs": 1, "trained": ["a"], "promoted": [], "stopped": ["a"]}])
    else:
        (logdir / "a").mkdir()
        write_json(logdir / "a" / trial.TRIAL_FILE, {"name": "a", "status": "success", "epochs": 1,
                                                     "settings": dataclasses.asdict(settings())})
    (logdir / experiment.EXPERIMENT_FILE).unlink()
    with pytest.raises(UsageError, match="search with other settings"):
        experiment.prepare(logdir, settings(), H.HPARAMS, GRID)
    if evidence == "halving.json":  # its rungs tell the halving settings apart too
        with pytest.raises(UsageError, match="search with other settings"):
            experiment.prepare(logdir, settings(), H.HPARAMS, {**halving, "halving_rate": 2, "rungs": [2, 4, 5]})
    experiment.prepare(logdir, settings(), H.HPARAMS, halving)  # the same search goes on


def test_without_experiment_json_an_early_stopped_trial_is_no_sign_of_halving(tmp_path):
    logdir = tmp_path / "logs"
    stopping = settings(early_stopping=1)
    experiment.prepare(logdir, stopping, H.HPARAMS, GRID)
    (logdir / "a").mkdir()
    write_json(logdir / "a" / trial.TRIAL_FILE, {"name": "a", "status": "success", "epochs": 1, "stopped_early_at": 1,
                                                 "settings": stopping.record()})
    (logdir / experiment.EXPERIMENT_FILE).unlink()
    experiment.prepare(logdir, stopping, H.HPARAMS, GRID)  # trained fewer epochs, but as a grid's trial does


# Folder names Windows refuses besides these characters: reserved device names, a trailing dot or space.
UNSAFE = re.compile(r'[\x00-\x1f<>:"/\\|?*]|[. ]$|^\.|^(con|prn|aux|nul|com\d|lpt\d)(\..*)?$', re.IGNORECASE)
ODD = {"num_units": [8, 256, -3], "dropout": [0.1, 0.5, 1e-05, 1e16], "learning_rate": [1e-05, 0.001, 0.0001],
       "optimizer": ["adam", "a b", "a/b", "a_b", "a\\b", "c:d", "CON", "con", "Adam", "x.", "..", '*?"<>|', "\t",
                     "-", "a-lr1", "x" * 80]}


def odd_grid():
    return grid.expand_grid([hp.HParam(h.name, hp.Discrete(ODD[h.name])) for h in H.HPARAMS])


def test_trial_names_read_well_and_are_unique_valid_folder_names(tmp_path):
    default = [trial.trial_name(values) for values in grid.expand_grid(H.HPARAMS)]
    assert "adam-lr0.001-u256-d0.1" in default and len(set(default)) == 36
    # A grid of one hparam (an edited hparams.py) names a trial by its value alone.
    odd = [trial.trial_name(values) for values in odd_grid() + [{"optimizer": v} for v in ODD["optimizer"]]]
    names = default + odd
    # Unique even where case does not count (macOS, Windows), short, and nothing a filesystem refuses.
    assert len({n.lower() for n in odd}) == len(odd)
    assert all(len(n) <= 60 and not UNSAFE.search(n) for n in names), [n for n in names if len(n) > 60 or UNSAFE.search(n)]
    for name in odd:  # and each really is a folder of its own
        (tmp_path / name).mkdir()
    assert len(list(tmp_path.iterdir())) == len(odd)
    assert trial.trial_name({"optimizer": "sgd", "learning_rate": 1e-05, "num_units": 8, "dropout": 0.0001}) == \
        "sgd-lr1e-05-u8-d0.0001"


def test_a_trial_name_does_not_depend_on_the_rest_of_the_grid():
    values = {"num_units": 256, "dropout": 0.1, "optimizer": "a/b", "learning_rate": 0.001}
    alone = trial.trial_name(values)
    assert [trial.trial_name(v) for v in odd_grid() if v == values] == [alone]
    assert trial.trial_name(dict(reversed(values.items()))) == alone  # nor on the hparams' order


def test_a_logdir_with_the_old_run_folder_names_is_continued_in_place(dataset, tmp_path, monkeypatch, capsys):
    """Run folders named as the first releases named them (num_units=8,dropout=0.1,...) are reused and
    continued where they are."""
    logdir = tmp_path / "logs"
    argv = ["--data", str(dataset), "--logdir", str(logdir), "--image-size", "24", "--batch-size", "8", "--epochs", "2",
            "--steps-per-epoch", "2", "--quiet", "--grid", "num_units=8", "--grid", "dropout=0.1",
            "--grid", "optimizer=adam,sgd", "--grid", "learning_rate=0.01"]
    adam, sgd = ({"num_units": 8, "dropout": 0.1, "optimizer": o, "learning_rate": 0.01} for o in ("adam", "sgd"))
    old = [naming.old_trial_name(adam), naming.old_trial_name(sgd)]

    # An older train.py: its names, and Ctrl-C once the sgd trial's first epoch is backed up.
    monkeypatch.setattr(naming, "trial_name", naming.old_trial_name)
    on_epoch_end = trial.Backup.on_epoch_end

    def interrupt(self, epoch, logs=None):
        on_epoch_end(self, epoch, logs)
        if self.run_dir.name == old[1]:
            raise KeyboardInterrupt
    monkeypatch.setattr(trial.Backup, "on_epoch_end", interrupt)
    assert train.main(argv) == train.EXIT_INTERRUPTED
    monkeypatch.undo()
    before = snapshot(logdir / old[0])
    assert json.loads((logdir / old[1] / trial.TRIAL_FILE).read_text())["status"] == "interrupted"
    capsys.readouterr()

    assert train.main(argv) == 0
    assert "Reusing 1 finished trial(s)" in capsys.readouterr().out
    assert snapshot(logdir / old[0]) == before  # reused untouched, not trained again
    continued = json.loads((logdir / old[1] / trial.TRIAL_FILE).read_text())
    assert continued["status"] == "success" and continued["resumed_from_epoch"] == 1 and continued["attempts"] == 2
    runs = {p.name for p in logdir.iterdir() if p.is_dir()} - {report.CHOSEN_RUN, report.SUMMARY_RUN}  # the experiment's own
    assert sorted(runs) == sorted(old)  # no trial's folder under a new name
    assert trial.trial_name(adam) not in (logdir / experiment.RESULTS_FILE).read_text()


def test_the_best_model_is_rank_1_of_this_grid_and_follows_it(tmp_path):
    """best_model.keras is a copy of rank 1's model: a .best.json record of a trial outside the
    current grid (a changed --grid) does not compete, a trial not fully trained is never copied,
    and a trial trained again (same name, a new record) is copied again."""
    logdir = tmp_path / "logs"
    done = settings()
    metrics = {"accuracy": 0.6, "best_val_accuracy": 0.6, "val_loss": 0.5, "wall_time_s": 1.0, "epochs": done.epochs}
    old = {"name": "old", "status": "success", "epochs": done.epochs, "settings": dataclasses.asdict(done),
           "metrics": {**metrics, "accuracy": 0.99}, "finished": "1"}
    (logdir / "old").mkdir(parents=True)
    write_json(logdir / experiment.BEST_FILE, old)
    (logdir / experiment.BEST_MODEL_FILE).write_text("old")
    new, short = {**old, "name": "new", "metrics": metrics}, {**old, "name": "short", "epochs": done.epochs - 1}
    for record in (new, short):
        (logdir / record["name"]).mkdir()
        (logdir / record["name"] / trial.MODEL_FILE).write_text(record["name"])
    experiment.keep_best(logdir, [short], done.epochs)
    assert (logdir / experiment.BEST_MODEL_FILE).read_text() == "old"
    experiment.keep_best(logdir, [new], done.epochs)
    assert json.loads((logdir / experiment.BEST_FILE).read_text())["name"] == "new"
    assert (logdir / experiment.BEST_MODEL_FILE).read_text() == "new"
    (logdir / "new" / trial.MODEL_FILE).write_text("new, trained again")
    experiment.keep_best(logdir, [{**new, "finished": "2"}], done.epochs)
    assert (logdir / experiment.BEST_MODEL_FILE).read_text() == "new, trained again"


def fast_run(dataset, logdir):
    return ["--data", str(dataset), "--logdir", str(logdir), "--image-size", "24", "--batch-size", "8", "--epochs", "1",
            "--steps-per-epoch", "2", "--quiet", "--grid", "num_units=8", "--grid", "dropout=0.1",
            "--grid", "learning_rate=0.01"]


def test_a_changed_grid_makes_its_own_rank_1_the_best_model(dataset, tmp_path, capsys):
    """The grid narrowed to its second-best trial, reused as it is, nothing trained: best_model.keras
    is now that trial's model, and its test score is given."""
    logdir = tmp_path / "logs"
    assert train.main([*fast_run(dataset, logdir), "--grid", "optimizer=adam,sgd"]) == 0
    with (logdir / "results.csv").open(newline="") as f:
        first, second = (row for row in csv.DictReader(f))
    assert (logdir / experiment.BEST_MODEL_FILE).read_bytes() == (logdir / first["run"] / trial.MODEL_FILE).read_bytes()
    capsys.readouterr()
    assert train.main([*fast_run(dataset, logdir), "--grid", f"optimizer={second['optimizer']}"]) == 0
    assert "Reusing 1 finished trial(s)" in capsys.readouterr().out
    assert (logdir / experiment.BEST_MODEL_FILE).read_bytes() == (logdir / second["run"] / trial.MODEL_FILE).read_bytes()
    assert json.loads((logdir / experiment.BEST_FILE).read_text())["name"] == second["run"]


def test_a_rank_1_trained_before_trials_kept_their_models_is_said(dataset, tmp_path, capsys):
    """A logdir from before trials kept their own models: a changed grid's rank 1 has no model to
    copy. best_model.keras stays as it is and the run says whose model it holds (no test score)."""
    logdir = tmp_path / "logs"
    assert train.main([*fast_run(dataset, logdir), "--grid", "optimizer=adam,sgd"]) == 0
    with (logdir / "results.csv").open(newline="") as f:
        first, second = (row for row in csv.DictReader(f))
    (logdir / second["run"] / trial.MODEL_FILE).unlink()  # as a trial trained by an older version
    capsys.readouterr()
    assert train.main([*fast_run(dataset, logdir), "--grid", f"optimizer={second['optimizer']}"]) == 0
    out = capsys.readouterr().out
    assert (f"Note: best_model.keras is {first['run']}'s model, not rank 1's ({second['run']}): that trial was "
            "trained before each trial kept its model") in out


def hparams_configs(logdir):
    """The metric tags of each hparams_config in logdir's own event files, oldest first."""
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    configs = []
    for path in sorted(logdir.glob("events.out.tfevents*"), key=lambda p: p.stat().st_mtime_ns):
        events = event_accumulator.EventAccumulator(str(path)).Reload()
        for content in events.PluginTagToContent("hparams").values():
            experiment_pb = plugin_data_pb2.HParamsPluginData.FromString(content).experiment
            configs.append([(m.name.group, m.name.tag) for m in experiment_pb.metric_infos])
    return configs


def test_a_changed_metric_set_rewrites_the_dashboards_hparams_config(tmp_path):
    """experiment.json records the dashboard's metrics: an experiment whose record has other ones (an older
    release's, before a metric was added) gets an hparams_config with today's, once."""
    logdir = tmp_path / "logs"
    stopping = settings(early_stopping=2, objective="val_auc")
    experiment.prepare(logdir, stopping, H.HPARAMS, GRID)
    today = [(m.as_proto().name.group, m.as_proto().name.tag) for m in M.dashboard("val_auc", 2)]
    assert ("", M.STOPPED_EARLY_AT) in today and ("", M.AUC) in today
    experiment.prepare(logdir, stopping, H.HPARAMS, GRID)
    assert hparams_configs(logdir) == [today]  # the same metrics: not written again

    path = logdir / experiment.EXPERIMENT_FILE
    recorded = json.loads(path.read_text())
    write_json(path, {**recorded, "metrics": recorded["metrics"][:-1]})
    experiment.prepare(logdir, stopping, H.HPARAMS, GRID)
    assert hparams_configs(logdir) == [today, today] and json.loads(path.read_text()) == recorded
