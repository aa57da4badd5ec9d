"""How far to trust successive halving: its pick against the grid's, at a realistic epoch (one full
pass over the training split), with its settings chosen on one split of the photos and judged on others.

    # The judgement (2026-12-06): split seeds 1-5 of the shared photos, one training seed each (= the
    # split seed); the setting is chosen by a declared rule from the stored choice data (split seed 42).
    # Seeds 1-4 finished: bench/results/search-split-seeds-e10-cpu-2core-2026-12-06.json
    python bench/search.py --split-seeds 1,2,3,4,5 --replay-only --json search-split-seeds.json
    # The choice data itself (2026-12-02): data_split.py's default split (seed 42), training seeds 1-3,
    # with a real halving run per seed (wall ratio, and the check that the replay gives its decisions):
    # bench/results/search-seeds-e10-cpu-2core-2026-12-02.json
    python bench/search.py --json search.json
    # A quick smoke run:
    python bench/search.py --split-seeds 7 --seeds 1 --epochs 2 --steps-per-epoch 2 --replay-only

Per split seed (--split-seeds S: data_split.py --seed S of --data, the 4,000 flat cat.N.jpg /
dog.N.jpg photos, 70/20/10: other training, validation and test images per split seed; without
--split-seeds, data_split.py's default seed 42, or --data as it is when it already has test/) and
per training seed (initial weights, data order, augmentation; --seeds, by default 1,2,3, or with
--split-seeds one training seed per split seed, equal to it):
  1. the grid (by default the 9 trials of optimizer x learning rate at 256 units, dropout 0.2, 64x64
     images, 10 epochs), run through train.main under --deterministic; every trial's model (its
     model.keras) is then scored on the test split here, for the benchmark only (no search reads it);
  2. unless --replay-only, one real halving run with --min-epochs / --halving-rate (default:
     train.py's defaults), same seed: it gives the wall ratio and checks the replay;
  3. the replay: under --deterministic a halving trial continued to epoch k is bit-identical to the
     grid's trial at epoch k, so halving's decisions follow from the grid's per-epoch curves. The
     replay of step 2's settings must give step 2's decisions and pick (`replay_matches`, true in
     every seed measured so far); then the replay compares other settings (--replay-min-epochs,
     --replay-rates, and the rung metric: validation accuracy or validation loss) at no training cost.

The choice and the judgement (with --split-seeds): the rule CHOICE_RULE is applied to the choice data
(--choose-from, by default the stored 2026-12-02 result: its curves and test accuracies, replayed
here), then the chosen setting is judged on the split seeds, which the choice never saw: their test
images are a fresh 10% draw of the same 4,000 photos (about a tenth of them were in the choice
split's test images, and the rest were its training or validation images; `test_overlap_with_choice`).

The JSON holds, per seed and as median/worst over seeds: wall_ratio (grid wall time / halving's;
only with a real run), test_gap (the grid pick's test accuracy minus the halving pick's; per seed with
its 95% interval, test_gap_interval_95, and the pick's rank in the grid), epoch_ratio (the grid's
epochs / halving's, exact), and first_rung_rank_correlation (Spearman, over the grid's trials, between
the rung metric after the first rung and the final validation accuracy). With --split-seeds, also
"choice" (the rule, each setting's figures on the choice data, the chosen one) and "judgement" (the
chosen setting on the split seeds; every setting's figures there are in by_setting). It is written
after every finished split seed, so a stopped run still leaves the finished seeds' figures.
With the defaults, on 2 CPU cores alone: about 20 minutes a seed for the grid (90 epochs), 7 more
for the real halving run (34 epochs).
"""

import argparse
import csv
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The project's root, for train.py and data_split.py; `bench` then resolves to bench/bench.py (a
# module beats the bench/ folder, which has no __init__.py).
sys.path.insert(0, str(ROOT))

import data_split  # noqa: E402
import hparams  # noqa: E402
import train  # noqa: E402
from bench import machine  # noqa: E402
from hparam_sweep import evaluate, experiment, grid, metrics as M, pipeline, search, trial  # noqa: E402
from hparam_sweep.common import TEST_SPLIT, read_json  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared/data/dogs-vs-cats-200px/train"
CHOICE_DATA = ROOT / "bench/results/search-seeds-e10-cpu-2core-2026-12-02.json"
CHOICE_SPLIT_SEED = data_split.DEFAULT_SEED  # the split the choice data was measured on
GRID = ["num_units=256", "dropout=0.2", "optimizer=adam,sgd,rmsprop", "learning_rate=0.001,0.0005,0.0001"]
FLOOR_WALL_RATIO = 2.3  # in every seed (a real run's wall time; the replay has the exact epoch ratio)
FLOOR_EPOCH_RATIO = 2.3  # the replay's stand-in: the wall ratio was 2.37-2.59 at an epoch ratio of 2.65
FLOOR_MEDIAN_GAP, FLOOR_WORST_GAP = 0.02, 0.04
CHOICE_RULE = (f"among the replayed settings whose test gap on the choice data is <= {FLOOR_MEDIAN_GAP} median "
               f"and <= {FLOOR_WORST_GAP} worst over its seeds, with an epoch ratio >= {FLOOR_EPOCH_RATIO}, "
               "the one that saves most epochs (ties: the lower worst gap, then the lower median gap)")


def replay(objective, epochs, min_epochs, rate, grid_records):
    """(the search, its decisions, its pick) of halving (ranking its rungs by `objective`, a
    metrics.Objective, with these settings) run on the grid's trials, each trained to epoch k taken
    from the grid's record at epoch k (its curve): what a real run gives under --deterministic."""
    halving = search.Halving([search.Trial(name, record["hparams"]) for name, record in grid_records.items()],
                             epochs, min_epochs, rate, objective)
    records = {}
    for tasks in halving.rounds(records):
        for task in tasks:
            full = grid_records[task.name]
            if full["status"] != "success" or search.epochs_trained(full) < task.epochs:
                records[task.name] = {**full, "status": "failure", "metrics": {}}
                continue
            row = full["curve"][task.epochs - 1]
            records[task.name] = {**full, "epochs": task.epochs, "curve": full["curve"][:task.epochs],
                                  "metrics": {M.ACCURACY: row[M.ACCURACY], M.VAL_LOSS: row[M.VAL_LOSS]}}
    return halving, halving.decisions(records), search.ranked(list(records.values()))[0]["name"]


def ranks(values):
    """1-based ranks of values, ties sharing their mean rank (as Spearman's correlation wants)."""
    order = sorted(values)
    return [order.index(v) + (order.count(v) + 1) / 2 for v in values]


def spearman(xs, ys):
    """Spearman's rank correlation: Pearson's correlation of the ranks (SciPy's spearmanr, without SciPy)."""
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    spread = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return cov / spread if spread else 0.0


def run_search(name, data, logdir, seed, args, extra=()):
    """One search through train.main; (wall seconds, {name: record} of its trials)."""
    argv = ["--data", str(data), "--logdir", str(logdir), "--image-size", str(args.image_size), "--batch-size",
            str(args.batch_size), "--epochs", str(args.epochs), "--seed", str(seed), "--quiet", "--deterministic",
            "--search", name, *(f"--grid={g}" for g in GRID), *extra]
    if args.steps_per_epoch:
        argv += ["--steps-per-epoch", str(args.steps_per_epoch)]
    start = time.monotonic()
    code = train.main(argv)
    if code not in (0, train.EXIT_TRIAL_FAILED):
        raise SystemExit(f"bench/search.py: the {name} search stopped with exit code {code}")
    # In grid order, as train.py hands trials to the search (its ties go to the trial earlier in the grid).
    names = [trial.trial_name(values) for values in grid.expand_grid(grid.override(hparams.HPARAMS, GRID))]
    records = {name: json.loads((logdir / name / "trial.json").read_text()) for name in names}
    return time.monotonic() - start, records


def test_accuracies(data, image_size, logdir, names):
    """({trial: test accuracy} of every fully trained trial's model (its model.keras) in logdir, the
    number of test images), for this benchmark alone: no search reads the test split."""
    import keras

    test = pipeline.load_split(data / TEST_SPLIT, image_size)
    images, labels = test.images.numpy(), test.labels.numpy()
    scores = {}
    for name in names:
        if (path := logdir / name / trial.MODEL_FILE).is_file():
            correct, count = evaluate.accuracy_on(keras.models.load_model(path), images, labels)
            scores[name] = correct / count
    return scores, len(labels)


def gap_interval(grid_accuracy, halving_accuracy, count):
    """95% interval of the test gap (the grid pick's accuracy minus halving's) on `count` images:
    Newcombe's hybrid score interval (1998, method 10) from the two Wilson intervals, as statsmodels'
    confint_proportions_2indep(method="newcomb") computes it (not a dependency here). It takes the
    two accuracies as independent; both picks are scored on the same images, so it errs wide."""
    (l1, u1), (l2, u2) = (evaluate.wilson_interval(round(p * count), count) for p in (grid_accuracy, halving_accuracy))
    gap = grid_accuracy - halving_accuracy
    return [round(gap - math.hypot(grid_accuracy - l1, u2 - halving_accuracy), 4),
            round(gap + math.hypot(u1 - grid_accuracy, halving_accuracy - l2), 4)]


def setting_name(min_epochs, rate, metric):
    return f"min{min_epochs}-rate{rate}-{metric}"


def replayed_settings(grid_trials, scores, test_count, epochs, min_epochs_list, rates):
    """Every setting replayed on one seed's grid: its pick, the gap on the test split, its rank in the
    grid, its cost, and how well its first rung ranked the trials."""
    grid_rank = [r["name"] for r in search.ranked(list(grid_trials.values()))]
    grid_pick = grid_rank[0]
    final = [grid_trials[n]["curve"][-1][M.ACCURACY] for n in grid_rank]
    settings = {}
    for min_epochs in min_epochs_list:
        for rate in rates:
            for metric in ("val_accuracy", "val_loss"):
                if min_epochs > epochs:
                    continue
                objective = M.OBJECTIVES[metric]
                halving_search, _, picked = replay(objective, epochs, min_epochs, rate, grid_trials)
                # Higher is better, as the final accuracy it is correlated with.
                first = [-objective.signed(grid_trials[n]["curve"][halving_search.rungs[0] - 1][objective.key])
                         for n in grid_rank]
                settings[setting_name(min_epochs, rate, metric)] = {
                    "pick": picked, "rank_in_grid": grid_rank.index(picked) + 1,
                    "test_gap": round(scores[grid_pick] - scores[picked], 4),
                    "test_gap_interval_95": gap_interval(scores[grid_pick], scores[picked], test_count),
                    "epoch_ratio": round(len(grid_trials) * epochs / halving_search.planned_epochs(), 3),
                    "first_rung_rank_correlation": round(spearman(first, final), 3),
                }
    return settings


def stored_grid(seed_result):
    """One stored seed's grid records, rebuilt from its curves: all that the replay and the ranking read."""
    records = {}
    for name, curve in seed_result["curves"].items():
        last = curve[-1] if curve else {}
        records[name] = {"name": name, "hparams": {}, "epochs": len(curve), "settings": {"epochs": len(curve)}, "curve": curve,
                         "status": "success" if name in seed_result["test_accuracy"] else "failure",
                         "metrics": {M.ACCURACY: last.get(M.ACCURACY), M.VAL_LOSS: last.get(M.VAL_LOSS)}}
    return records


def by_setting(seeds):
    """Every replayed setting over the seeds: median / worst gap, epoch ratio, correlation, floors."""
    table = {}
    for name in seeds[0]["settings"]:
        rows = [s["settings"][name] for s in seeds]
        gaps = [r["test_gap"] for r in rows]
        entry = {"median_test_gap": round(statistics.median(gaps), 4), "worst_test_gap": max(gaps),
                 "epoch_ratio": rows[0]["epoch_ratio"],
                 "median_first_rung_rank_correlation": round(statistics.median(r["first_rung_rank_correlation"] for r in rows), 4),
                 "test_gap_per_seed": gaps}
        entry["meets_floors"] = (entry["median_test_gap"] <= FLOOR_MEDIAN_GAP and entry["worst_test_gap"] <= FLOOR_WORST_GAP
                                 and entry["epoch_ratio"] >= FLOOR_EPOCH_RATIO)
        table[name] = entry
    return table


def choose(choice_path, args):
    """CHOICE_RULE applied to the stored choice data, replayed here from its curves and test accuracies."""
    stored = read_json(choice_path)
    epochs = stored["settings"]["epochs"]
    seeds = [{"seed": s["seed"], "settings": replayed_settings(stored_grid(s), s["test_accuracy"], s["test_count"],
                                                               epochs, args.replay_min_epochs, args.replay_rates)}
             for s in stored["seeds"]]
    table = by_setting(seeds)
    candidates = [n for n, s in table.items() if s["meets_floors"]]
    chosen = (max(candidates, key=lambda n: (table[n]["epoch_ratio"], -table[n]["worst_test_gap"],
                                             -table[n]["median_test_gap"])) if candidates else None)
    # The replay of the stored curves must give the stored figures (those the real runs were checked on).
    reproduces = all(s["settings"][n]["test_gap"] == t["settings"][n]["test_gap"]
                     for s, t in zip(seeds, stored["seeds"]) for n in s["settings"] if n in t["settings"])
    return {"data": str(choice_path.relative_to(ROOT) if choice_path.is_relative_to(ROOT) else choice_path),
            "split_seed": CHOICE_SPLIT_SEED, "training_seeds": [s["seed"] for s in stored["seeds"]],
            "epochs": epochs, "rule": CHOICE_RULE, "replay_reproduces_stored_gaps": reproduces,
            "by_setting": table, "meeting_floors": candidates, "chosen": chosen}


def split_photos(source, dest, seed):
    """data_split.py --seed `seed` of the flat photos into dest (hard links); dest."""
    if data_split.main(["--source", str(source), "--dest", str(dest), "--link", "--seed", str(seed)]) != 0:
        raise SystemExit(f"bench/search.py: data_split.py could not split {source} (seed {seed})")
    return dest


def split_of(dest):
    """{source file name: split} of a data_split.py folder, from its manifest.csv."""
    with open(dest / "manifest.csv", newline="") as f:
        return {Path(row["source"]).name: row["split"] for row in csv.DictReader(f)}


def test_overlap(split, choice_split):
    """Where this split's test images were in the choice split: {split name: share of test images}."""
    test = [name for name, where in split.items() if where == TEST_SPLIT]
    return {where: round(sum(choice_split.get(n) == where for n in test) / len(test), 4)
            for where in sorted(set(choice_split.values()))}


def one_seed(seed, data, tmp, args, tag=""):
    """Every figure of one (split, training) seed."""
    grid_dir = tmp / f"grid{tag}-{seed}"
    grid_wall, grid_trials = run_search("grid", data, grid_dir, seed, args)
    scores, test_count = test_accuracies(data, args.image_size, grid_dir, grid_trials)
    grid_rank = [r["name"] for r in search.ranked(list(grid_trials.values()))]
    result = {"seed": seed, "grid_wall_s": round(grid_wall, 1), "grid_pick": grid_rank[0]}
    if not args.replay_only:
        settings = ["--min-epochs", str(args.min_epochs), "--halving-rate", str(args.halving_rate)]
        halving_dir = tmp / f"halving{tag}-{seed}"
        halving_wall, halving_trials = run_search("halving", data, halving_dir, seed, args, settings)
        real_decisions = read_json(halving_dir / experiment.DECISIONS_FILE)
        real_pick = search.ranked(list(halving_trials.values()))[0]["name"]
        _, decisions, pick = replay(M.DEFAULT_OBJECTIVE, args.epochs, args.min_epochs, args.halving_rate, grid_trials)
        result.update({
            "halving_wall_s": round(halving_wall, 1), "wall_ratio": round(grid_wall / halving_wall, 3),
            "epochs_trained": {"grid": sum(map(search.epochs_trained, grid_trials.values())),
                               "halving": sum(map(search.epochs_trained, halving_trials.values()))},
            "halving_pick": real_pick,
            "replay_matches": experiment.decisions_json(decisions) == real_decisions and pick == real_pick})
    result.update({
        "test_accuracy": scores, "test_count": test_count,
        "val_accuracy": {n: r["metrics"].get(M.ACCURACY) for n, r in grid_trials.items()},
        "curves": {n: r.get("curve", []) for n, r in grid_trials.items()},
        "settings": replayed_settings(grid_trials, scores, test_count, args.epochs, args.replay_min_epochs,
                                      args.replay_rates),
    })
    if args.replay_only:
        result["halving_pick"] = result["settings"][setting_name(args.min_epochs, args.halving_rate, "val_accuracy")]["pick"]
    return result


def summary(seeds, key):
    """Per seed, median and worst (the largest gap or rank, the smallest ratio or correlation)."""
    values = [s[key] for s in seeds]
    worse_is_larger = key.endswith("gap") or "rank_in_grid" in key
    return {"per_seed": values, "median": round(statistics.median(values), 4), "worst": max(values) if worse_is_larger else min(values)}


def headline(seeds, name):
    """The per-seed figures of one setting, lifted to the top of each seed's result."""
    for s in seeds:
        chosen = s["settings"][name]
        s.update(test_gap=chosen["test_gap"], test_gap_interval_95=chosen["test_gap_interval_95"],
                 halving_pick_rank_in_grid=chosen["rank_in_grid"], epoch_ratio=chosen["epoch_ratio"],
                 first_rung_rank_correlation=chosen["first_rung_rank_correlation"])


def build_report(report, seeds, args, judged):
    """The report's figures over the seeds finished so far."""
    headline(seeds, judged)
    report["seeds"] = seeds
    report["judged_setting"] = judged
    keys = ["test_gap", "halving_pick_rank_in_grid", "epoch_ratio", "first_rung_rank_correlation"]
    real = all("wall_ratio" in s for s in seeds)
    for key in (["wall_ratio"] if real else []) + keys:
        report[key] = summary(seeds, key)
    report["replay_matches"] = all(s["replay_matches"] for s in seeds) if real else None
    report["by_setting"] = by_setting(seeds)
    report["floors_met"] = (report["test_gap"]["median"] <= FLOOR_MEDIAN_GAP and report["test_gap"]["worst"] <= FLOOR_WORST_GAP
                            and (min(report["wall_ratio"]["per_seed"]) >= FLOOR_WALL_RATIO and report["replay_matches"]
                                 if real else report["epoch_ratio"]["worst"] >= FLOOR_EPOCH_RATIO))
    report["floors"] = {"median_test_gap": FLOOR_MEDIAN_GAP, "worst_test_gap": FLOOR_WORST_GAP,
                        ("wall_ratio" if real else "epoch_ratio"): FLOOR_WALL_RATIO if real else FLOOR_EPOCH_RATIO}
    return report


def print_report(report):
    seeds = report["seeds"]
    real = report["replay_matches"] is not None
    print(f"\nsetting judged: {report['judged_setting']}")
    print(f"{'split':>5} {'seed':>4} {'wall ratio' if real else 'epoch ratio':>11} {'test gap':>9} {'its 95% interval':>17} "
          f"{'pick rank':>9} {'rung-1 corr':>11}{' replay' if real else ''}")
    for s in seeds:
        low, high = s["test_gap_interval_95"]
        ratio = s["wall_ratio"] if real else s["epoch_ratio"]
        print(f"{s.get('split_seed', CHOICE_SPLIT_SEED):>5} {s['seed']:>4} {ratio:>11.2f} {s['test_gap']:>9.4f} "
              f"{f'{low:.3f} to {high:.3f}':>17} {s['halving_pick_rank_in_grid']:>9} {s['first_rung_rank_correlation']:>11.2f}"
              + ((" matches" if s["replay_matches"] else " DIFFERS") if real else ""))
    print(f"median test gap {report['test_gap']['median']:.4f} (floor {FLOOR_MEDIAN_GAP}), worst "
          f"{report['test_gap']['worst']:.4f} (floor {FLOOR_WORST_GAP}); floors met: {report['floors_met']}")
    print("\nreplayed settings: median / worst test gap, epoch ratio, median rung-1 correlation, floors met")
    for name, s in report["by_setting"].items():
        print(f"  {name:28} {s['median_test_gap']:>7.4f} {s['worst_test_gap']:>7.4f} {s['epoch_ratio']:>6.2f} "
              f"{s['median_first_rung_rank_correlation']:>6.2f} {'yes' if s['meets_floors'] else 'no'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="flat cat.N.jpg / dog.N.jpg photos (split here by data_split.py, with a test split), "
                             "or, without --split-seeds, a data_split.py folder that has test/")
    parser.add_argument("--json", type=Path, help="write every figure here (after every finished split seed)")
    parser.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")],
                        help="training seeds, comma-separated (default: 1,2,3; with --split-seeds: the split seed)")
    parser.add_argument("--split-seeds", type=lambda t: [int(x) for x in t.split(",")],
                        help="data_split.py seeds, comma-separated: judge the setting chosen on --choose-from on "
                             "each of these splits of --data (default: one split, data_split.py's seed 42)")
    parser.add_argument("--choose-from", type=Path, default=CHOICE_DATA,
                        help="with --split-seeds: the stored result the setting is chosen on (default: %(default)s)")
    parser.add_argument("--replay-only", action="store_true",
                        help="no real halving run: every halving figure from the replay of the grid's curves "
                             "(exact under --deterministic), no wall ratio")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps-per-epoch", type=int, default=0,
                        help="training steps per epoch (default: 0, one full pass over the training split)")
    parser.add_argument("--min-epochs", type=int, default=train.DEFAULT_MIN_EPOCHS,
                        help="the real halving run's first rung (default: train.py's, %(default)s)")
    parser.add_argument("--halving-rate", type=int, default=train.DEFAULT_HALVING_RATE,
                        help="the real halving run's rate (default: train.py's, %(default)s)")
    parser.add_argument("--replay-min-epochs", type=lambda t: [int(x) for x in t.split(",")], default=[1, 2, 3],
                        help="first rungs the replay compares (default: 1,2,3)")
    parser.add_argument("--replay-rates", type=lambda t: [int(x) for x in t.split(",")], default=[2, 3, 4],
                        help="rates the replay compares (default: 2,3,4)")
    args = parser.parse_args(argv)
    data = args.data.expanduser()
    if not data.is_dir():
        parser.error(f"--data {data} is not a folder")
    if args.split_seeds and (data / TEST_SPLIT).is_dir():
        parser.error("--split-seeds splits --data itself: give the flat photos, not a split folder")

    report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()} | {"grid": GRID},
              "machine": machine()}
    default_setting = setting_name(args.min_epochs, args.halving_rate, "val_accuracy")
    judged = default_setting
    if args.split_seeds:
        report["choice"] = choose(args.choose_from, args)
        print(f"choice ({report['choice']['data']}): {report['choice']['rule']}: {report['choice']['chosen']}", flush=True)
        if report["choice"]["chosen"] is None:
            print("no setting meets the floors on the choice data: judging the defaults", flush=True)
        judged = report["choice"]["chosen"] or default_setting
        report["judgement"] = {"setting": judged, "split_seeds": args.split_seeds,
                               "training_seeds": "the split seed" if args.seeds is None else args.seeds,
                               "train_defaults": default_setting}

    seeds = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.split_seeds:
            if not (data / TEST_SPLIT).is_dir():
                data = split_photos(data, tmp / "data", CHOICE_SPLIT_SEED)
            for seed in args.seeds or [1, 2, 3]:
                print(f"\n=== seed {seed} ===", flush=True)
                seeds.append(one_seed(seed, data, tmp, args))
            build_report(report, seeds, args, judged)
        else:
            choice_split = split_of(split_photos(data, tmp / f"data-{CHOICE_SPLIT_SEED}", CHOICE_SPLIT_SEED))
            for split_seed in args.split_seeds:
                split_dir = split_photos(data, tmp / f"data-{split_seed}", split_seed)
                overlap = test_overlap(split_of(split_dir), choice_split)
                for seed in args.seeds or [split_seed]:
                    print(f"\n=== split seed {split_seed}, training seed {seed} ===", flush=True)
                    seeds.append({"split_seed": split_seed, "test_overlap_with_choice": overlap,
                                  **one_seed(seed, split_dir, tmp, args, tag=f"-split{split_seed}")})
                build_report(report, seeds, args, judged)
                report["complete"] = split_seed == args.split_seeds[-1]
                if args.json:
                    args.json.write_text(json.dumps(report, indent=2) + "\n")
                print_report(report)
            if report["choice"]["chosen"] != default_setting:
                print(f"note: the setting judged ({judged}) is not train.py's defaults ({default_setting})")
            return 0
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
