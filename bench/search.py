"""How far to trust successive halving: its pick against the grid's, judged on a test split that
neither search sees, over several seeds, at a realistic epoch (one full pass over the training split).

    python bench/search.py --data ../shared/data/dogs-vs-cats-200px/train --json search.json
    python bench/search.py --data data --seeds 1 --epochs 2 --steps-per-epoch 2      # a quick smoke run

Per seed (the training seed: initial weights, data order, augmentation; the split stays the same):
  1. the grid (by default the 9 trials of optimizer x learning rate at 256 units, dropout 0.2, 64x64
     images, 10 epochs), run through train.main under --deterministic; every trial's model (its
     model.keras) is then scored on the test split here, for the benchmark only (no search reads it);
  2. one real halving run with --min-epochs / --halving-rate (default: train.py's defaults), same seed;
  3. the replay: under --deterministic a halving trial continued to epoch k is bit-identical to the
     grid's trial at epoch k, so halving's decisions follow from the grid's per-epoch curves. The
     replay of step 2's settings must give step 2's decisions and pick (`replay_matches`); then the
     replay compares other settings (--replay-min-epochs, --replay-rates, and the rung metric:
     validation accuracy or validation loss) at no training cost.
The JSON holds, per seed and as median/worst over seeds: wall_ratio (grid wall time / halving's),
test_gap (the grid pick's test accuracy minus the halving pick's; per seed with its 95% interval,
test_gap_interval_95, and the pick's rank in the grid),
and first_rung_rank_correlation (Spearman, over the grid's trials, between the rung metric after
--min-epochs and the final validation accuracy).
With the defaults, on 2 CPU cores: about 27 minutes a seed (the grid 90 epochs, halving 34).
"""

import argparse
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
GRID = ["num_units=256", "dropout=0.2", "optimizer=adam,sgd,rmsprop", "learning_rate=0.001,0.0005,0.0001"]
FLOOR_WALL_RATIO = 2.3  # in every seed
FLOOR_MEDIAN_GAP, FLOOR_WORST_GAP = 0.02, 0.04


class LossHalving(search.Halving):
    """Halving that ranks a rung by validation loss (lower first), then accuracy: for the replay."""

    def rung_key(self, accuracy, val_loss):
        return val_loss, -accuracy


def replay(halving, grid_records):
    """(decisions, pick) of `halving` run on the grid's trials, each trained to epoch k taken from the
    grid's record at epoch k (its curve): what a real run gives under --deterministic."""
    trials = {name: record["hparams"] for name, record in grid_records.items()}
    records = {}
    for tasks in halving.rounds(trials, records):
        for task in tasks:
            full = grid_records[task.name]
            if full["status"] != "success" or search.epochs_trained(full) < task.epochs:
                records[task.name] = {**full, "status": "failure", "metrics": {}}
                continue
            row = full["curve"][task.epochs - 1]
            records[task.name] = {**full, "epochs": task.epochs, "curve": full["curve"][:task.epochs],
                                  "metrics": {M.ACCURACY: row[M.ACCURACY], M.VAL_LOSS: row[M.VAL_LOSS]}}
    return halving.decisions(trials, records), search.ranked(list(records.values()))[0]["name"]


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


def one_seed(seed, data, tmp, args):
    """Every figure of one seed."""
    grid_wall, grid_trials = run_search("grid", data, tmp / f"grid-{seed}", seed, args)
    scores, test_count = test_accuracies(data, args.image_size, tmp / f"grid-{seed}", grid_trials)
    settings = ["--min-epochs", str(args.min_epochs), "--halving-rate", str(args.halving_rate)]
    halving_wall, halving_trials = run_search("halving", data, tmp / f"halving-{seed}", seed, args, settings)
    real_decisions = read_json(tmp / f"halving-{seed}" / experiment.DECISIONS_FILE)
    real_pick = search.ranked(list(halving_trials.values()))[0]["name"]
    grid_rank = [r["name"] for r in search.ranked(list(grid_trials.values()))]
    grid_pick = grid_rank[0]

    decisions, pick = replay(search.Halving(args.epochs, args.min_epochs, args.halving_rate), grid_trials)
    result = {
        "seed": seed, "grid_wall_s": round(grid_wall, 1), "halving_wall_s": round(halving_wall, 1),
        "wall_ratio": round(grid_wall / halving_wall, 3),
        "epochs_trained": {"grid": sum(map(search.epochs_trained, grid_trials.values())),
                           "halving": sum(map(search.epochs_trained, halving_trials.values()))},
        "grid_pick": grid_pick, "halving_pick": real_pick,
        "replay_matches": experiment.decisions_json(decisions) == real_decisions and pick == real_pick,
        "test_accuracy": scores, "test_count": test_count,
        "val_accuracy": {n: r["metrics"].get(M.ACCURACY) for n, r in grid_trials.items()},
        "curves": {n: r.get("curve", []) for n, r in grid_trials.items()},
        "settings": {},
    }
    # Every setting replayed: its pick, the gap on the test split, its rank in the grid, its cost.
    final = [grid_trials[n]["curve"][-1][M.ACCURACY] for n in grid_rank]
    for min_epochs in args.replay_min_epochs:
        for rate in args.replay_rates:
            for metric, kind in (("val_accuracy", search.Halving), ("val_loss", LossHalving)):
                if min_epochs > args.epochs:
                    continue
                halving_search = kind(args.epochs, min_epochs, rate)
                _, picked = replay(halving_search, grid_trials)
                first = [(grid_trials[n]["curve"][halving_search.rungs[0] - 1][M.ACCURACY] if metric == "val_accuracy"
                          else -grid_trials[n]["curve"][halving_search.rungs[0] - 1][M.VAL_LOSS]) for n in grid_rank]
                result["settings"][f"min{min_epochs}-rate{rate}-{metric}"] = {
                    "pick": picked, "rank_in_grid": grid_rank.index(picked) + 1,
                    "test_gap": round(scores[grid_pick] - scores[picked], 4),
                    "test_gap_interval_95": gap_interval(scores[grid_pick], scores[picked], test_count),
                    "epoch_ratio": round(len(grid_trials) * args.epochs / halving_search.planned_epochs(len(grid_trials)), 3),
                    "first_rung_rank_correlation": round(spearman(first, final), 3),
                }
    chosen = result["settings"][f"min{args.min_epochs}-rate{args.halving_rate}-val_accuracy"]
    result.update(test_gap=chosen["test_gap"], test_gap_interval_95=chosen["test_gap_interval_95"],
                  halving_pick_rank_in_grid=chosen["rank_in_grid"],
                  first_rung_rank_correlation=chosen["first_rung_rank_correlation"])
    return result


def summary(seeds, key):
    values = [s[key] for s in seeds]
    return {"per_seed": values, "median": statistics.median(values), "worst": max(values) if key.endswith("gap") else min(values)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="flat cat.N.jpg / dog.N.jpg photos (split here by data_split.py, with a test split), "
                             "or a data_split.py folder that has test/")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], default=[1, 2, 3],
                        help="training seeds, comma-separated (default: 1,2,3)")
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
    if not args.data.is_dir():
        parser.error(f"--data {args.data} is not a folder")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data.expanduser()
        if not (data / TEST_SPLIT).is_dir():
            if data_split.main(["--source", str(data), "--dest", str(tmp / "data"), "--link"]) != 0:
                raise SystemExit("bench/search.py: data_split.py could not split --data")
            data = tmp / "data"
        report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()} | {"grid": GRID},
                  "machine": machine()}
        seeds = []
        for seed in args.seeds:
            print(f"\n=== seed {seed} ===", flush=True)
            seeds.append(one_seed(seed, data, tmp, args))
    report["seeds"] = seeds
    for key in ("wall_ratio", "test_gap", "halving_pick_rank_in_grid", "first_rung_rank_correlation"):
        report[key] = summary(seeds, key)
    report["replay_matches"] = all(s["replay_matches"] for s in seeds)
    report["by_setting"] = {
        name: {"median_test_gap": statistics.median(s["settings"][name]["test_gap"] for s in seeds),
               "worst_test_gap": max(s["settings"][name]["test_gap"] for s in seeds),
               "epoch_ratio": seeds[0]["settings"][name]["epoch_ratio"],
               "median_first_rung_rank_correlation": statistics.median(
                   s["settings"][name]["first_rung_rank_correlation"] for s in seeds)}
        for name in seeds[0]["settings"]}
    report["floors_met"] = (min(report["wall_ratio"]["per_seed"]) >= FLOOR_WALL_RATIO
                            and report["test_gap"]["median"] <= FLOOR_MEDIAN_GAP
                            and report["test_gap"]["worst"] <= FLOOR_WORST_GAP and report["replay_matches"])

    print(f"\n{'seed':>4} {'wall ratio':>10} {'test gap':>9} {'its 95% interval':>17} {'pick rank':>9} "
          f"{'rung-1 corr':>11} replay")
    for s in seeds:
        low, high = s["test_gap_interval_95"]
        print(f"{s['seed']:>4} {s['wall_ratio']:>10.2f} {s['test_gap']:>9.4f} {f'{low:.3f} to {high:.3f}':>17} "
              f"{s['halving_pick_rank_in_grid']:>9} "
              f"{s['first_rung_rank_correlation']:>11.2f} {'matches' if s['replay_matches'] else 'DIFFERS'}")
    print(f"median test gap {report['test_gap']['median']:.4f} (floor {FLOOR_MEDIAN_GAP}), worst "
          f"{report['test_gap']['worst']:.4f} (floor {FLOOR_WORST_GAP}); floors met: {report['floors_met']}")
    print("\nreplayed settings: median / worst test gap, epoch ratio, median rung-1 correlation")
    for name, s in report["by_setting"].items():
        print(f"  {name:28} {s['median_test_gap']:>7.4f} {s['worst_test_gap']:>7.4f} {s['epoch_ratio']:>6.2f} "
              f"{s['median_first_rung_rank_correlation']:>6.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
