"""Benchmark train.py --ray against the local loop: wall time and resident memory per process.

    python bench/parallel.py --data ../shared/data/dogs-vs-cats-200px/train --json parallel.json
    python bench/parallel.py --data data --gpus        # a machine with GPUs: 1..K trials per GPU

The same small grid (4 trials by default) runs through the real command line, each run in its own
process and fresh logdir: the local loop, then --ray at 1 trial at a time (--cpus-per-trial = all
cores) and at 2 (half each); with --gpus, --ray at 1, 2 and 4 trials per GPU instead. Ray's
start-up counts: it is part of what a user waits for. Each run gets its own empty --cache-dir, so
every runner decodes the images once (the local loop in its process, --ray in a worker). The runs
repeat in rounds (--repeats), one of each runner per round, so that the drift of a shared machine's
speed (the same trial takes 17 s or 21 s here, hour to hour) hits every runner alike. The JSON holds
every run, the machine, each runner's median wall time and where it went (median_phases_s: before
the first trial started, the trials, after the last one ended), and the headline number:
  ray_overhead  (median wall time of --ray at 1 trial at a time - the local loop's) / the local loop's (floor: <= 0.10)
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import machine, prepare_split  # noqa: E402

GRID = ["--grid", "num_units=256", "--grid", "dropout=0.2", "--grid", "optimizer=adam,sgd",
        "--grid", "learning_rate=0.001,0.0001"]
# Where a run's wall time went: start-up (imports, starting Ray, the decode) until the first trial
# started, the trials, and the end (results, stopping Ray, exit).
PHASES = ("before_first_trial_s", "trials_s", "after_last_trial_s")
# The driver's own peak resident memory, reported by the driver process itself.
PEAK = ("import resource, runpy, sys\nsys.argv = sys.argv[1:]\ntry:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "finally:\n    print('peak_rss_mb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, file=sys.stderr)\n")


def run(label, flags, common, logdir):
    """One train.py run in a fresh process: its wall time, the driver's peak RSS, each trial process's RSS."""
    start, started_at = time.monotonic(), time.time()
    command = ["--logdir", str(logdir), "--cache-dir", str(logdir.with_name(logdir.name + "-cache")), *common, *flags]
    done = subprocess.run([sys.executable, "-c", PEAK, str(ROOT / "train.py"), *command],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "RAY_memory_monitor_refresh_ms": "0"})
    wall = time.monotonic() - start
    if done.returncode:
        sys.exit(f"{label} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    peak = [float(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("peak_rss_mb")][0]
    trials = [json.loads(p.read_text()) for p in sorted(logdir.glob("*/trial.json"))]
    spans = [[datetime.datetime.fromisoformat(t[k]).timestamp() for k in ("started", "finished")] for t in trials]
    first, last = min(s for s, _ in spans), max(f for _, f in spans)
    phases = (first - started_at, last - first, started_at + wall - last)
    result = {"label": label, "flags": flags, "wall_s": round(wall, 1), "driver_peak_rss_mb": round(peak),
              **{phase: round(seconds, 1) for phase, seconds in zip(PHASES, phases)},
              "trial_s": [round(f - s, 1) for s, f in spans],
              "trial_rss_mb": [t.get("rss_mb") for t in trials],
              "trial_processes": len({(t.get("worker") or {}).get("pid") for t in trials})}
    print(json.dumps(result), flush=True)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a split folder (train/, validation/) or a flat one")
    parser.add_argument("--cap", type=int, default=0, help="use at most this many images per class (0: all)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps-per-epoch", type=int, default=40)
    parser.add_argument("--gpus", action="store_true", help="GPU mode: --ray at 1, 2 and 4 trials per GPU")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of all runs; the figures are medians")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    if args.gpus and not machine()["gpu"]:
        parser.error("--gpus needs a machine whose TensorFlow sees a GPU; leave it out to compare on the CPUs")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = prepare_split(args.data, args.cap, tmp / "data")
        common = ["--data", str(data), "--image-size", str(args.image_size), "--epochs", str(args.epochs),
                  "--steps-per-epoch", str(args.steps_per_epoch), "--quiet", *GRID]
        if not args.gpus:
            common += ["--no-xla", "--no-mixed-precision", "--no-augment-in-model"]
        cores = os.cpu_count()
        runners = [("local", [])]
        if args.gpus:
            runners += [(f"ray, {k} per GPU", ["--ray", "--trials-per-gpu", str(k), "--cpus-per-trial", "1"])
                        for k in (1, 2, 4)]
        else:
            runners += [("ray, 1 at a time", ["--ray", "--cpus-per-trial", str(cores)]),
                        ("ray, 2 at a time", ["--ray", "--cpus-per-trial", str(cores / 2)])]
        runs = [run(label, flags, common, tmp / f"round{r}-runner{i}")
                for r in range(args.repeats) for i, (label, flags) in enumerate(runners)]

    def median_of(key):
        return {label: statistics.median(r[key] for r in runs if r["label"] == label) for label, _ in runners}

    median = median_of("wall_s")
    result = {"machine": machine(), "repeats": args.repeats, "median_wall_s": median, "runs": runs,
              "median_phases_s": {phase: median_of(phase) for phase in PHASES},
              "ray_overhead": round(median[runners[1][0]] / median["local"] - 1, 3)}
    print(f"ray_overhead {result['ray_overhead']:+.3f} (floor <= 0.10)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
