"""Grid, random or TPE search over the hparams in hparams.py; every trial becomes one run in TensorBoard's HParams dashboard.

    python train.py --demo                       # synthetic images, small grid, a few minutes on a CPU
    python data_split.py --source ~/Downloads/dogs-vs-cats.zip
    python train.py                              # the 36-trial grid -> logs/hparam_tuning
    python train.py --grid optimizer=adam --epochs 10
    python train.py --sampler random --trials 20     # 20 trials drawn from the domains instead of the grid
    python train.py --sampler tpe --trials 20        # 20 trials proposed by TPE (pip install -e ".[tpe]")
    python train.py --model-file my_model.py         # your own build_model(hparams, image_size, num_classes)
    python train.py --objective val_loss --early-stopping 3  # rank by val loss; stop a trial 3 epochs past its best
    tensorboard --logdir logs/hparam_tuning

Rerunning the same command after a crash or Ctrl-C resumes: finished trials are skipped, an
interrupted trial continues from its last backup (taken every few minutes).

This file is the command line: the flags, the choice of search and executor, the start-up line
and the final table. The package hparam_sweep/ does the work (its __init__.py maps the modules):
hparams.py holds the domains, hparam_sweep/model.py the model (and --model-file's contract).
"""

import argparse
import contextlib
import math
import sys
from pathlib import Path

from hparam_sweep import console, device
from hparam_sweep.common import BACKUP_MINUTES, RunStopped, UsageError

DEFAULT_DATA = Path("data")
DEFAULT_LOGDIR = Path("logs/hparam_tuning")
DEFAULT_IMAGE_SIZE = 150  # the tutorial's input size
DEFAULT_BATCH_SIZE = 32
DEFAULT_EPOCHS = 5
DEFAULT_SEED = 42
# Successive halving: chosen on one split of the shared photos (bench/search.py, docs/halving.md),
# 2.4-2.6x less wall time at 10 epochs; on splits it was not chosen on its pick fell short of the
# grid's, as HALVING_TRUST says at the end of every halving run.
DEFAULT_MIN_EPOCHS = 2
DEFAULT_HALVING_RATE = 3
TPE_BATCH = 4  # --sampler tpe: trials proposed at once (side by side under --ray); it costs TPE little
HALVING_TRUST = ("How far to trust halving's pick: with the defaults (--min-epochs 2 --halving-rate 3) at 10 epochs, "
                 "on 4 splits of real photos they were not chosen on, it scored 0.0325, 0.035, 0.005 and 0.000 below "
                 "the plain grid's pick on the test split (median 0.019), and picked what the grid picked in 1 of "
                 "4. To be sure of the best configuration, run the grid (--search grid); see docs/halving.md.")

# --demo: generated images, small enough for a laptop CPU, still a real grid with real spread.
DEMO_DATA = Path("data/demo")
DEMO_LOGDIR = Path("logs/demo")
DEMO_IMAGE_SIZE = 64  # the generated images' own size
DEMO_EPOCHS = 10
DEMO_GRID = ["num_units=256", "dropout=0.1", "optimizer=adam,sgd,rmsprop", "learning_rate=0.001,0.0001"]

EXIT_TRIAL_FAILED = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3  # a fault outside the trials (disk full): rerun once it is fixed
EXIT_NO_TEST_SCORE = 4  # the trials succeeded; data/test was re-split or holds their images: no score
EXIT_INTERRUPTED = 130

def positive_int(text):
    """argparse type: a whole number of at least 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return int(text)


def parse_args(argv):
    """The command line, with --demo's defaults applied (TensorFlow is not imported here)."""
    parser = argparse.ArgumentParser(
        description="Search an image classifier's hparams; every trial is logged for TensorBoard's HParams dashboard.",
    )
    # Defaults are written into each help text (not ArgumentDefaultsHelpFormatter): several depend
    # on --demo or the device, and "(default: None)" or "(default: False)" tell nobody anything.
    add = parser.add_argument
    add("--data", type=Path, help=f"folder with train/ and validation/ (and test/), each holding the same folders, "
        f"one per class (default: {DEFAULT_DATA}, or {DEMO_DATA} with --demo)")
    add("--model-file", type=Path, metavar="FILE", help="a Python file defining build_model(hparams, image_size, "
        "num_classes), the contract in hparam_sweep/model.py's docstring (default: that file's CNN)")
    add("--logdir", type=Path, help=f"experiment folder, one run folder per trial "
        f"(default: {DEFAULT_LOGDIR}, or {DEMO_LOGDIR} with --demo)")
    add("--demo", action="store_true", help="generate a synthetic dataset and run a small grid on it "
        f"(image size {DEMO_IMAGE_SIZE}, {DEMO_EPOCHS} epochs, grid {' '.join(DEMO_GRID)})")
    add("--grid", action="append", default=[], metavar="NAME=V1,V2",
        help="replace one hparam's values for this run (repeatable); hparams.py holds the defaults")
    add("--image-size", type=positive_int, help=f"images are resized to this square (default: {DEFAULT_IMAGE_SIZE})")
    add("--batch-size", type=positive_int, default=DEFAULT_BATCH_SIZE,
        help="images per training step (default: %(default)s)")
    add("--epochs", type=positive_int, help=f"epochs per trial (default: {DEFAULT_EPOCHS})")
    add("--steps-per-epoch", type=positive_int, help="training steps per epoch (default: one pass over the training set)")
    add("--seed", type=int, default=DEFAULT_SEED,
        help="seeds Python, NumPy, TensorFlow, data order and augmentation (default: %(default)s)")
    add("--deterministic", action="store_true",
        help="bitwise-reproducible metrics (TensorFlow op determinism; slower, turns XLA off)")
    device.add_flags(parser)
    add("--backup-minutes", type=float, default=BACKUP_MINUTES, help="back a trial up this often, besides each epoch "
        "end: a kill loses at most this much training (default: %(default)s)")
    add("--histograms", action=argparse.BooleanOptionalAction, default=True, help="log each layer's weights at "
        "every epoch end, for TensorBoard's Distributions and Histograms tabs; they change no result, so a rerun may "
        "turn them on or off (default: on; docs/tensorboard.md: what they cost)")
    add("--restart", action="store_true",
        help="start the grid over; earlier results in --logdir are moved to a dated folder beside it")
    add("--quiet", action="store_true", help="no Keras progress, only a line per trial "
        "(without it: a progress bar on a terminal, a line per epoch into a file or pipe)")
    add("--verbose", action="store_true", help="TensorFlow's own log lines as well, unfiltered (for bug reports); "
        "TF_CPP_MIN_LOG_LEVEL is then left as you set it")
    add("--sampler", choices=("grid", "random", "tpe"), default="grid", help="which configurations are tried: grid: "
        "every combination of the domains (a RealInterval's two ends); random: --trials of them drawn from the "
        "domains, seeded by --seed; tpe: --trials of them proposed by Optuna's TPE from the results so far "
        "(pip install -e \".[tpe]\") (default: %(default)s)")
    add("--trials", type=positive_int, help="--sampler random or tpe: how many trials; a rerun with more reuses the "
        "first ones")
    add("--tpe-batch", type=positive_int, default=TPE_BATCH, help="--sampler tpe: trials proposed at once, side by "
        "side with --ray; part of the experiment (the same batch gives the same trials, with --ray or without) "
        "(default: %(default)s)")
    add("--search", choices=("grid", "halving"), default="grid", help="grid: every trial for --epochs; halving: "
        "every trial for --min-epochs, then only the best 1/--halving-rate go on, rung by rung, to --epochs "
        "(default: %(default)s)")
    add("--objective", default="val_accuracy", metavar="METRIC", help="what ranks the trials (results.csv, halving's "
        "rungs, best_model.keras, TPE) and what --early-stopping watches: val_accuracy, val_loss (lower is better) or "
        "val_auc (Keras' AUC, one-vs-rest for each class and averaged) (default: %(default)s)")
    add("--early-stopping", type=positive_int, default=0, metavar="PATIENCE", help="end a trial once its --objective "
        "has not improved for PATIENCE epochs in a row; it counts as fully trained (halving does not continue it) and "
        "keeps its last epoch's model (default: off)")
    add("--min-epochs", type=positive_int, default=DEFAULT_MIN_EPOCHS,
        help="halving: the first rung's epochs (default: %(default)s)")
    add("--halving-rate", type=int, default=DEFAULT_HALVING_RATE,
        help="halving: keep the best 1/RATE at each rung, at least 2 (default: %(default)s)")
    add("--cache-dir", type=Path, help="where this machine keeps the decoded images, so that a rerun, and every trial "
        "process, reads them instead of decoding again (default: $XDG_CACHE_HOME/hparam-sweep/decoded, or "
        "~/.cache/hparam-sweep/decoded)")
    add("--no-cache", action="store_true", help="decode the images in memory in every run (and, with --ray, in every "
        "trial process); nothing is written to the cache")
    # Trials in parallel: hparam_sweep/parallel.py, which needs pip install -e ".[ray]".
    add("--ray", action="store_true",
        help="run trials in parallel on a Ray instance started on this machine (pip install -e \".[ray]\")")
    add("--ray-address", metavar="ADDRESS", help="run them on the Ray cluster at ADDRESS (host:port, or auto: the one "
        "`ray start` made on this machine); implies --ray")
    add("--trials-per-gpu", type=positive_int, default=1, help="--ray: trials side by side on one GPU")
    add("--cpus-per-trial", type=float, default=1, help="--ray: CPUs each trial reserves")
    add("--max-retries", type=int, default=2, help="--ray: times a trial whose worker process or machine died is "
        "retried from its backup before it is recorded as failed")
    args = parser.parse_args(argv)
    args.ray = args.ray or args.ray_address is not None
    if args.no_cache and args.cache_dir:
        parser.error("--no-cache and --cache-dir contradict each other: pick one")
    if args.cpus_per_trial <= 0 or args.max_retries < 0:
        parser.error("--cpus-per-trial must be more than 0, --max-retries 0 or more")
    if args.sampler != "grid" and args.trials is None:
        parser.error(f"--sampler {args.sampler} needs --trials N: how many trials to try")
    if args.sampler == "grid" and args.trials is not None:
        parser.error("--trials goes with --sampler random or tpe (a grid's trials are its combinations)")
    if args.sampler == "tpe" and args.search == "halving":
        parser.error("--sampler tpe learns from fully trained trials: it goes with --search grid, not halving "
                     "(--sampler random does)")
    if args.halving_rate < 2:
        parser.error("--halving-rate must be at least 2")
    if args.backup_minutes < 0:
        parser.error("--backup-minutes must be 0 (every step) or more")
    args.model_file = args.model_file and args.model_file.resolve()  # trials, and Ray's on other machines, read it there
    # --demo changes the defaults, not what the user set explicitly.
    args.data = args.data or (DEMO_DATA if args.demo else DEFAULT_DATA)
    args.logdir = args.logdir or (DEMO_LOGDIR if args.demo else DEFAULT_LOGDIR)
    args.image_size = args.image_size or (DEMO_IMAGE_SIZE if args.demo else DEFAULT_IMAGE_SIZE)
    args.epochs = args.epochs or (DEMO_EPOCHS if args.demo else DEFAULT_EPOCHS)
    args.grid = (DEMO_GRID if args.demo else []) + args.grid
    return args


def make_settings(args, train_images):
    """The trial settings the command line asks for (device flags resolved)."""
    from hparam_sweep import modelfile, pipeline, trial

    same = ("image_size", "batch_size", "epochs", "seed", "deterministic", "mixed_precision", "augment_in_model",
            "classes", "early_stopping", "objective")
    model = {"model_file": str(args.model_file), "model_sha256": modelfile.fingerprint(args.model_file)} \
        if args.model_file else {}
    # Op determinism switches XLA off anyway; say so in the settings rather than pretend.
    return trial.Settings(data=str(args.data.resolve()), data_fingerprint=pipeline.data_fingerprint(args.data),
                          steps_per_epoch=args.steps_per_epoch or math.ceil(train_images / args.batch_size),
                          xla=args.xla and not args.deterministic, **{name: getattr(args, name) for name in same},
                          **model)


def resolve_model_flags(args, gpus):
    """The device flags (device.resolve_flags) and what they mean for --model-file: its model is
    augmented in the input pipeline (--augment-in-model puts the package's augmentation layer into
    the package's CNN only)."""
    if args.model_file and args.augment_in_model:
        raise UsageError("--augment-in-model goes with the package's CNN: a --model-file model is augmented in the "
                         "input pipeline (leave the flag out)")
    if args.model_file:
        args.augment_in_model = False
    device.resolve_flags(args, gpus)


def check_model_file(args, domains):
    """--model-file's model built, run and trained one step on tiny images before anything else
    (modelfile.check), for the first grid values of the domains: a mistake is one line, exit 2."""
    from hparam_sweep import grid, modelfile

    if not args.model_file:
        return
    values = {h.name: grid.grid_values(h)[0] for h in domains}
    try:
        modelfile.check(args.model_file, values, args.image_size, args.classes)
    except modelfile.ModelFileError as e:
        raise UsageError(f"--model-file {args.model_file}: {e}") from None
    print(f"Model: build_model of {args.model_file} (checked: {len(args.classes)} outputs, it trains and saves).")


def make_executor(args, cluster, domains):
    """(settings, executor), with the start-up line: trials one at a time in this process, on the
    images it decodes, or side by side as Ray tasks (hparam_sweep/parallel.py) whose processes take
    the images from their own machine's decode cache. --model-file is checked first."""
    from hparam_sweep import imagecache, loop, pipeline

    cache = imagecache.location(args.cache_dir, not args.no_cache)
    if not args.ray:
        resolve_model_flags(args, gpus := device.gpu_names())
        check_model_file(args, domains)
        data = pipeline.load_data(args.data, args.image_size, cache, args.classes)
        settings = make_settings(args, len(data[0]))
        print(f"Training on {device.named(gpus)}: {device.describe(settings)}.")
        return settings, loop.InProcess(settings, data, args.logdir, console.keras_verbosity(args.quiet),
                                        args.backup_minutes, args.histograms)
    from hparam_sweep import parallel

    parallel.driver_off_gpus(cluster)
    resolve_model_flags(args, cluster.get("GPU", 0))
    check_model_file(args, domains)
    settings = make_settings(args, pipeline.image_count(args.data / "train"))  # the driver decodes nothing
    print(f"Ray: {parallel.describe(cluster)}: {device.describe(settings)}. " + (
        f"Each machine decodes the images once, into its own decode cache ({cache} here)." if cache
        else "--no-cache: each trial process decodes the images itself."), flush=True)
    resources = parallel.trial_resources(cluster, args.cpus_per_trial, args.trials_per_gpu, args.max_retries)
    # The cache flags, not `cache`: each worker resolves them on its own machine (the default folder is per machine).
    return settings, parallel.RayExecutor(settings, args.logdir, (args.cache_dir, not args.no_cache),
                                          0 if args.quiet else 2, args.backup_minutes, resources, args.histograms)


def main(argv=None):
    """Run the grid; exit code 0 when every trial succeeded, 1 when one failed, 2 for a usage
    error, 3 when a fault outside the trials (a full disk) stopped it, 4 when they all succeeded but
    data/test is not their test split (no test score), 130 when interrupted (rerun to resume)."""
    args = parse_args(argv)
    if sys.platform == "win32":  # the locks are POSIX flock (fcntl), which native Windows lacks
        print("train.py: error: native Windows is not supported: run it under WSL2 (Linux), or on Linux or macOS",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        with console.tensorflow_kept_quiet(args.verbose):
            return _main(args)
    except UsageError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RunStopped as e:
        print(f"train.py: stopped: {e}. Finished trials are saved and the others resume from their backups: "
              f"fix it, then rerun the same command.", file=sys.stderr)
        return EXIT_STOPPED
    except KeyboardInterrupt:
        print("\nInterrupted. Finished trials are saved and an interrupted one resumes from its last "
              "backup: rerun the same command to continue.", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(args):
    # --ray: Ray starts first, and has its trial processes import TensorFlow while this one does.
    with ray_started(args) if args.ray else contextlib.nullcontext() as cluster:
        # Imported here, not at the top, so that --help and argument mistakes answer at once
        # instead of after TensorFlow's several-second import.
        import data_split
        import hparams
        from hparam_sweep import experiment, grid, loop, metrics, pipeline, sampler, search

        objective = metrics.objective(args.objective)
        domains = grid.override(hparams.HPARAMS, args.grid)
        sampling = (sampler.RandomSampler(domains, hparams.LOG_SCALE, args.seed, args.trials)
                    if args.sampler == "random" else
                    sampler.TPESampler(domains, hparams.LOG_SCALE, args.seed, args.trials, args.tpe_batch, objective)
                    if args.sampler == "tpe" else sampler.GridSampler(domains))
        with experiment.locked(args.logdir):
            if args.demo:
                data_split.prepare_demo(args.data)
            args.classes = pipeline.check_data(args.data)
            if args.restart and (moved := experiment.move_aside(args.logdir)):
                print(f"Earlier results moved to {moved}")
            settings, executor = make_executor(args, cluster, domains)
            if args.sampler == "tpe":  # proposes its trials batch by batch, from the results
                searcher = search.Sequential(sampling, args.epochs)
            elif args.search == "halving":
                searcher = search.Halving(sampling.trials(args.logdir), args.epochs, args.min_epochs, args.halving_rate,
                                          objective)
            else:
                searcher = search.Grid(sampling.trials(args.logdir), args.epochs)
            experiment.prepare(args.logdir, settings, domains, {**searcher.describe(), **sampling.describe()},
                               sampling.domains())
            records = loop.run_search(searcher, settings, domains, args.logdir, executor)
            return finish(args, records)  # under the lock: the test score is written into the logdir


def ray_started(args):
    """--ray: the Ray cluster joined or started, a trial process per slot already importing
    TensorFlow; as a context manager that yields the cluster's resources."""
    console.ray_worker_output(terminal=sys.stdout.isatty())
    try:
        from hparam_sweep import parallel
    except ModuleNotFoundError as e:
        if e.name != "ray":
            raise
        raise UsageError('--ray needs Ray: pip install -e ".[ray]"') from None
    return parallel.connected(args.ray_address, warm_up=args.cpus_per_trial)


def finish(args, records):
    """The ranked table, the chosen model's test score (or why there is none) and the summary; the exit code."""
    from hparam_sweep import evaluate, experiment, report, search
    from hparam_sweep import metrics as M
    from hparam_sweep.common import read_json

    objective = M.objective(args.objective)
    ranked = search.ranked(records, objective)
    by = "" if objective == M.DEFAULT_OBJECTIVE else f" (ranked by {objective.name})"
    print(f"\nrank  accuracy  best_acc  val_loss   time  epochs  status   trial{by}")
    for rank, r in enumerate(ranked, 1):
        m = r.get("metrics") or {}
        if r["status"] == "success":
            auc = f", {M.AUC} {m[M.AUC]:.4f}" if M.AUC in m else ""
            stopped = f", stopped early at epoch {r['stopped_early_at']}" if search.stopped_early(r) else ""
            print(f"{rank:>4}  {m[M.ACCURACY]:8.4f}  {m[M.BEST_ACCURACY]:8.4f}  {m[M.VAL_LOSS]:8.4f}  "
                  f"{console.minutes(m[M.WALL_TIME]):>5}  {m.get(M.EPOCHS, '?'):>6}  success  {r['name']}{auc}{stopped}")
        else:
            print(f"{rank:>4}  {'-':>8}  {'-':>8}  {'-':>8}  {'-':>5}  {'-':>6}  {r['status']:<7}  {r['name']}: "
                  f"{r.get('error')}")
    refused = False
    try:
        if line := evaluate.chosen_model_line(args.logdir, args.data, args.image_size, ranked, args.epochs):
            print("\n" + line)
    except UsageError as e:  # a data/test that is not the trials' test split: one line, no score
        refused = True
        print(f"\ntrain.py: no test score: {e}.", file=sys.stderr)
    score = None if refused else read_json(args.logdir / evaluate.SCORE_FILE)
    report.write_summary(args.logdir, ranked, score if score and ranked and score["trial"] == ranked[0]["name"] else None)
    failed = [r for r in records if r["status"] != "success"]
    print(f"\n{len(records) - len(failed)} of {len(records)} trials succeeded; "
          f"results in {args.logdir / experiment.RESULTS_FILE}")
    if failed:
        print(f"{len(failed)} failed: " + "; ".join(f"{r['name']} ({r['error']})" for r in failed))
    print(f"See them all:  tensorboard --logdir {args.logdir}")
    if args.search == "halving":
        print(f"\n{HALVING_TRUST}")
    return EXIT_TRIAL_FAILED if failed else EXIT_NO_TEST_SCORE if refused else 0


if __name__ == "__main__":
    sys.exit(main())
