"""Benchmark the halving search against the plain grid: compute, wall time and the trial each picks.

    python bench/search.py --data ../shared/data/dogs-vs-cats-200px/train --json search.json
    python bench/search.py --data data --steps-per-epoch 5 --epochs 3        # a quick smoke run

Both searches run through the real driver, train.main(), on the same images, seed and settings
(by default the 9 trials of optimizer x learning rate at 256 units and dropout 0.2, 5 epochs,
64x64 images). The JSON holds every figure, the machine, and the headline numbers:
  wall_ratio    grid wall time / halving wall time (floor 2.3)
  accuracy_gap  the grid's best final validation accuracy minus that of halving's pick (floor: <= 0.03)
and, to tell why halving picks what it picks, every trial's validation accuracy after each epoch and
`first_rung_rank_correlation`: Spearman's rank correlation, over the grid's trials, between the
accuracy at the first rung (--min-epochs) and the final one. Near 0, the first cut is a lottery.
"""

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The project's root, for train.py; `bench` then resolves to bench/bench.py (a module beats the
# bench/ folder, which has no __init__.py).
sys.path.insert(0, str(ROOT))

import train  # noqa: E402
from bench import machine, prepare_split  # noqa: E402
from hparam_sweep import metrics as M, search  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared/data/dogs-vs-cats-200px/train"
GRID = ["num_units=256", "dropout=0.2", "optimizer=adam,sgd,rmsprop", "learning_rate=0.001,0.0005,0.0001"]
FLOOR_WALL_RATIO = 2.3
FLOOR_ACCURACY_GAP = 0.03


def run_search(name, data, logdir, args):
    """Run one search through train.main; return its figures."""
    argv = ["--data", str(data), "--logdir", str(logdir), "--image-size", str(args.image_size),
            "--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--seed", str(args.seed), "--quiet",
            "--search", name, *(f"--grid={g}" for g in GRID)]
    if args.steps_per_epoch:
        argv += ["--steps-per-epoch", str(args.steps_per_epoch)]
    if name == "halving":
        argv += ["--min-epochs", str(args.min_epochs)]
    start = time.monotonic()
    code = train.main(argv)
    wall = time.monotonic() - start
    if code not in (0, train.EXIT_TRIAL_FAILED):
        raise SystemExit(f"bench/search.py: the {name} search stopped with exit code {code}")
    records = [json.loads((logdir / row["run"] / "trial.json").read_text()) for row in read_csv(logdir / "results.csv")]
    best = search.ranked(records)[0]
    return {
        "wall_s": round(wall, 1),
        "epochs_trained": sum(search.epochs_trained(r) for r in records if r["status"] == "success"),
        "trials": len(records),
        "best_trial": best["name"],
        "best_val_accuracy": best["metrics"][M.ACCURACY],
        "ranking": [(r["name"], search.epochs_trained(r), r["metrics"].get(M.ACCURACY)) for r in search.ranked(records)],
        "curves": {r["name"]: [row[M.ACCURACY] for row in r.get("curve", [])] for r in records},
    }


def ranks(values):
    """1-based ranks of values, ties sharing their mean rank (as Spearman's correlation wants)."""
    order = sorted(values)
    return [order.index(v) + (order.count(v) + 1) / 2 for v in values]


def spearman(xs, ys):
    """Spearman's rank correlation of two equally long lists (SciPy's spearmanr, without SciPy for
    one formula: Pearson's correlation of the ranks)."""
    rx, ry = ranks(xs), ranks(ys)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    spread = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    return cov / spread if spread else 0.0


def read_csv(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="a data_split.py folder, or flat cat.N.jpg / dog.N.jpg files (split 80/20 via symlinks)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps-per-epoch", type=int, default=60,
                        help="training steps per epoch (default: 60, so that both searches take about half an hour on "
                             "2 CPU cores); 0 for a full pass over the training images")
    parser.add_argument("--min-epochs", type=int, default=1, help="halving's first rung (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=train.DEFAULT_SEED)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"--data {args.data} is not a folder")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = prepare_split(args.data.expanduser(), 0, tmp / "data")
        load_at_start = [round(x, 2) for x in os.getloadavg()]
        report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()} | {"grid": GRID}}
        for name in ("grid", "halving"):
            print(f"\n=== {name} ===", flush=True)
            report[name] = run_search(name, data, tmp / name, args)
        report["machine"] = machine() | {"load_average_at_start": load_at_start}

    grid, halving = report["grid"], report["halving"]
    grid_names = [name for name, _, _ in grid["ranking"]]
    pick = halving["best_trial"]
    report["halving_pick_rank_in_grid"] = grid_names.index(pick) + 1
    report["halving_pick_val_accuracy_in_grid"] = next(acc for name, _, acc in grid["ranking"] if name == pick)
    report["wall_ratio"] = round(grid["wall_s"] / halving["wall_s"], 3)
    report["epoch_ratio"] = round(grid["epochs_trained"] / halving["epochs_trained"], 3)
    report["accuracy_gap"] = round(grid["best_val_accuracy"] - halving["best_val_accuracy"], 4)
    curves = grid["curves"].values()
    report["first_rung_rank_correlation"] = round(
        spearman([c[args.min_epochs - 1] for c in curves], [c[-1] for c in curves]), 3)
    report["floors_met"] = report["wall_ratio"] >= FLOOR_WALL_RATIO and report["accuracy_gap"] <= FLOOR_ACCURACY_GAP

    print(f"\n{'':8} {'epochs':>6} {'wall':>8}  best trial (final val accuracy)")
    for name in ("grid", "halving"):
        r = report[name]
        print(f"{name:8} {r['epochs_trained']:>6} {r['wall_s']:>7.0f}s  {r['best_trial']} ({r['best_val_accuracy']:.4f})")
    print(f"wall_ratio {report['wall_ratio']} (floor {FLOOR_WALL_RATIO}), accuracy_gap {report['accuracy_gap']} "
          f"(floor {FLOOR_ACCURACY_GAP}); halving's pick ranks {report['halving_pick_rank_in_grid']} in the grid")
    print(f"rank correlation of the grid's accuracies at epoch {args.min_epochs} and at the end: "
          f"{report['first_rung_rank_correlation']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
