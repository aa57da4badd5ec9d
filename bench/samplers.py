"""Random search and TPE against the tutorial's grid: each one's pick scored on the test split, at
half the grid's epochs, over several seeds.

    # The measurement (2026-12-06): bench/results/samplers-cpu-2core-2026-12-06.json
    python bench/samplers.py --json samplers.json
    # A quick smoke run:
    python bench/samplers.py --seeds 1 --epochs 1 --steps-per-epoch 2 --budget 0.1

The photos (--data, the 4,000 flat cat.N.jpg / dog.N.jpg) are split once by data_split.py (its
default seed; 70/20/10). Per training seed (--seeds; it also seeds the random and TPE draws):
  1. grid: the tutorial's 36 trials (hparams.py's domains) through train.main;
  2. random and tpe: --budget x 36 trials each (half by default, so at most half the grid's epochs),
     over the space a practitioner would search (SPACE: optimizer; learning rate log-uniform over
     two decades, 1e-4 to 1e-2; dropout 0.1-0.5; units 128-512), through train.main
     --sampler random / tpe;
  3. every trial's model (its model.keras) scored on the test split, here, for the benchmark only
     (no search reads the test split).
Every trial trains --epochs epochs; what is cut to fit about an hour on 2 cores is the image size
(32 px, not the tutorial's 150) and the epochs (3), so the accuracies are far below a real run's.

Per seed and search: the pick (rank 1 by validation accuracy, as train.py ranks) and its test accuracy
with its 95% Wilson interval; the epochs and wall time the search spent; `first_reached_epochs`:
the epochs spent, in trial order, up to the end of the first trial whose test accuracy reached the
grid pick's (null: never). Over seeds, median and worst of each search's gap to the grid pick
(the grid pick's test accuracy minus its own; with its interval per seed) and of TPE's lead over
random. The floors (FLOOR_*) are issue #28's; the JSON says whether each was met.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import hparams  # noqa: E402
import train  # noqa: E402
from bench import machine  # noqa: E402
from hparam_sweep import evaluate, search  # noqa: E402
from hparam_sweep.common import read_json  # noqa: E402
from tensorboard.plugins.hparams import summary_v2 as hp  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from search import DEFAULT_DATA, CHOICE_SPLIT_SEED, gap_interval, split_photos, test_accuracies  # noqa: E402

SPACE = [hp.HParam("num_units", hp.IntInterval(128, 512)), hp.HParam("dropout", hp.RealInterval(0.1, 0.5)),
         hp.HParam("optimizer", hp.Discrete(["adam", "sgd", "rmsprop"])),
         hp.HParam("learning_rate", hp.RealInterval(1e-4, 1e-2))]
LOG_SCALE = {"learning_rate"}
FLOOR_MEDIAN_GAP, FLOOR_WORST_GAP = 0.01, 0.03  # TPE's pick against the grid's, at <= half its epochs


def run(kind, data, logdir, seed, args, trials=None):
    """One search through train.main: (wall seconds, its records in trial order)."""
    argv = ["--data", str(data), "--logdir", str(logdir), "--image-size", str(args.image_size), "--batch-size",
            str(args.batch_size), "--epochs", str(args.epochs), "--seed", str(seed), "--quiet"]
    if args.steps_per_epoch:
        argv += ["--steps-per-epoch", str(args.steps_per_epoch)]
    if kind != "grid":
        argv += ["--sampler", kind, "--trials", str(trials)]
    declared = hparams.HPARAMS, hparams.LOG_SCALE
    if kind != "grid":  # train.py reads the domains from hparams.py: the wider space for the samplers
        hparams.HPARAMS, hparams.LOG_SCALE = SPACE, LOG_SCALE
    start = time.monotonic()
    try:
        code = train.main(argv)
    finally:
        hparams.HPARAMS, hparams.LOG_SCALE = declared
    wall = time.monotonic() - start
    if code not in (0, train.EXIT_TRIAL_FAILED, train.EXIT_NO_TEST_SCORE):
        raise SystemExit(f"bench/samplers.py: the {kind} search stopped with exit code {code}")
    records = [read_json(p) for p in logdir.glob("*/trial.json")]
    return wall, sorted(records, key=lambda r: r["index"])


def figures(kind, records, wall, scores, test_count, grid_pick_accuracy):
    """One search's figures on one seed; grid_pick_accuracy None for the grid itself (it is the mark)."""
    pick = search.ranked(records)[0]
    accuracy = scores[pick["name"]]
    low, high = evaluate.wilson_interval(round(accuracy * test_count), test_count)
    mark = accuracy if grid_pick_accuracy is None else grid_pick_accuracy
    spent, reached = 0, None
    for r in records:
        spent += search.epochs_trained(r) if r["status"] == "success" else 0
        if reached is None and scores.get(r["name"], 0) >= mark:
            reached = spent
    result = {"trials": len(records), "pick": pick["name"], "pick_hparams": pick["hparams"],
              "pick_val_accuracy": pick["metrics"]["accuracy"], "pick_test_accuracy": round(accuracy, 4),
              "pick_test_interval_95": [round(low, 4), round(high, 4)], "epochs": spent, "wall_s": round(wall, 1),
              "failed": sum(r["status"] != "success" for r in records), "first_reached_epochs": reached,
              "best_test_accuracy_of_any_trial": round(max(scores.values()), 4)}
    if grid_pick_accuracy is not None:
        result["gap_to_grid"] = round(grid_pick_accuracy - accuracy, 4)
        result["gap_to_grid_interval_95"] = gap_interval(grid_pick_accuracy, accuracy, test_count)
    return result


def one_seed(seed, data, tmp, args):
    """Every figure of one training seed: the grid, then random and TPE at --budget of its trials."""
    result = {"seed": seed}
    grid_pick = None
    for kind in ("grid", "random", "tpe"):
        logdir = tmp / f"{kind}-{seed}"
        trials = max(1, round(args.budget * 36))
        wall, records = run(kind, data, logdir, seed, args, trials)
        scores, test_count = test_accuracies(data, args.image_size, logdir, [r["name"] for r in records])
        result[kind] = figures(kind, records, wall, scores, test_count, grid_pick)
        grid_pick = result["grid"]["pick_test_accuracy"]
        print(f"seed {seed} {kind}: {json.dumps(result[kind])}", flush=True)
    result["tpe_lead_over_random"] = round(result["tpe"]["pick_test_accuracy"] - result["random"]["pick_test_accuracy"], 4)
    return result


def summary(seeds):
    """Median and worst over seeds, and the floors."""
    out = {}
    for kind in ("random", "tpe"):
        gaps = [s[kind]["gap_to_grid"] for s in seeds]
        out[kind] = {"gap_to_grid_median": round(statistics.median(gaps), 4), "gap_to_grid_worst": max(gaps),
                     "epoch_ratio_median": round(statistics.median(
                         s["grid"]["epochs"] / s[kind]["epochs"] for s in seeds), 3),
                     "wall_ratio_median": round(statistics.median(
                         s["grid"]["wall_s"] / s[kind]["wall_s"] for s in seeds), 3)}
    leads = [s["tpe_lead_over_random"] for s in seeds]
    out["tpe_lead_over_random_median"] = round(statistics.median(leads), 4)
    out["tpe_lead_over_random_worst"] = min(leads)
    out["floors"] = {
        f"tpe gap median <= {FLOOR_MEDIAN_GAP}": out["tpe"]["gap_to_grid_median"] <= FLOOR_MEDIAN_GAP,
        f"tpe gap worst <= {FLOOR_WORST_GAP}": out["tpe"]["gap_to_grid_worst"] <= FLOOR_WORST_GAP,
        "tpe epochs <= half the grid's": all(2 * s["tpe"]["epochs"] <= s["grid"]["epochs"] for s in seeds),
        "tpe >= random (median)": out["tpe_lead_over_random_median"] >= 0,
    }
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the flat cat.N.jpg / dog.N.jpg photos")
    parser.add_argument("--json", type=Path, help="write every figure here (after every finished seed)")
    parser.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], default=[1, 2, 3])
    parser.add_argument("--budget", type=float, default=0.5, help="random's and TPE's trials, as a share of the grid's 36")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps-per-epoch", type=int, default=0,
                        help="training steps per epoch (default: 0, one full pass over the training split)")
    args = parser.parse_args(argv)
    report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "space": {h.name: str(h.domain) for h in SPACE}, "log_scale": sorted(LOG_SCALE), "machine": machine()}
    seeds = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = split_photos(args.data.expanduser(), tmp / "data", CHOICE_SPLIT_SEED)
        for seed in args.seeds:
            print(f"\n=== seed {seed} ===", flush=True)
            seeds.append(one_seed(seed, data, tmp, args))
            report.update(seeds=seeds, summary=summary(seeds), complete=len(seeds) == len(args.seeds))
            if args.json:
                args.json.write_text(json.dumps(report, indent=2) + "\n")
            print(json.dumps(report["summary"], indent=2), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
