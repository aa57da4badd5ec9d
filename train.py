"""Grid search over the hparams in hparams.py; every trial becomes one run in TensorBoard's HParams dashboard.

    python train.py --demo                       # synthetic images, small grid, a few minutes on a CPU
    python data_split.py --source ~/Downloads/dogs-vs-cats.zip
    python train.py                              # the 36-trial grid -> logs/hparam_tuning
    python train.py --grid optimizer=adam --epochs 10
    tensorboard --logdir logs/hparam_tuning

Rerunning the same command after a crash or Ctrl-C resumes: finished trials are skipped, an
interrupted trial continues from its last completed epoch.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the way

import argparse
import csv
import datetime
import fcntl
import gc
import hashlib
import json
import math
import platform
import shlex
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import keras
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import summary as hp_summary

import data_split
import hparams as H
import pipeline

DEFAULT_DATA = Path("data")
DEFAULT_LOGDIR = Path("logs/hparam_tuning")
DEFAULT_IMAGE_SIZE = 150  # the tutorial's input size
DEFAULT_BATCH_SIZE = 32
DEFAULT_EPOCHS = 5
DEFAULT_SEED = 42

# --demo: generated images, small enough for a laptop CPU, still a real grid with real spread.
DEMO_DATA = Path("data/demo")
DEMO_LOGDIR = Path("logs/demo")
DEMO_IMAGE_SIZE = 64  # the generated images' own size
DEMO_EPOCHS = 10
DEMO_GRID = ["num_units=256", "dropout=0.1", "optimizer=adam,sgd,rmsprop", "learning_rate=0.001,0.0001"]

TRIAL_FILE = "trial.json"
HISTORY_FILE = "history.csv"
EXPERIMENT_FILE = "experiment.json"
RESULTS_FILE = "results.csv"
BEST_MODEL_FILE = "best_model.keras"
FINISHED = ("success", "failure")

EXIT_TRIAL_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A mistake the user can fix; main() prints it as one line and exits with code 2."""


@dataclass(frozen=True)
class Settings:
    """Everything besides the hparams that decides a trial's result; trials are comparable
    (and reusable on a rerun) only when their Settings are equal."""

    data: str
    data_fingerprint: str
    image_size: int
    batch_size: int
    epochs: int
    steps_per_epoch: int
    seed: int
    deterministic: bool
    mixed_precision: bool
    xla: bool
    augment_in_model: bool


# ----------------------------------------------------------------------------- the model


def make_optimizer(name, learning_rate):
    """A Keras optimizer by its hparam name."""
    optimizers = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}
    if name not in optimizers:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(optimizers)}")
    return optimizers[name](learning_rate=learning_rate)


def build_model(values, image_size, xla=False, augment_seed=None):
    """The tutorial's small CNN, compiled for the trial's hparams. Takes uint8 images.

    With an augment_seed the training augmentation is the model's first layer (for a GPU);
    otherwise the input pipeline augments.
    """
    layers = keras.layers
    augmentation = [] if augment_seed is None else [pipeline.RandomAffine(augment_seed)]
    model = keras.Sequential(
        [
            keras.Input((image_size, image_size, 3), dtype="uint8"),
            *augmentation,
            layers.Rescaling(1 / 255),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Dropout(values["dropout"]),
            layers.Conv2D(128, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Dropout(values["dropout"]),
            layers.Flatten(),
            layers.Dense(values["num_units"], activation="relu"),
            # float32 output keeps the softmax and the loss exact under mixed precision.
            layers.Dense(len(pipeline.CLASS_NAMES), activation="softmax", dtype="float32"),
        ]
    )
    model.compile(
        optimizer=make_optimizer(values["optimizer"], values["learning_rate"]),
        loss="categorical_crossentropy",
        metrics=[H.METRIC_ACCURACY],
        jit_compile=xla,
    )
    return model


# ----------------------------------------------------------------------------- one trial


class TrialFailed(Exception):
    """A trial that ran but produced no usable model (its loss went NaN)."""


class _FirstEpoch(keras.callbacks.Callback):
    """Remembers the epoch training started at: above 0 when BackupAndRestore resumed it."""

    def __init__(self):
        super().__init__()
        self.epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        if self.epoch is None:
            self.epoch = epoch


def read_history(path):
    """Per-epoch rows of a CSVLogger file, one per epoch (a repeated epoch keeps its last row)."""
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = {int(row["epoch"]): row for row in csv.DictReader(f)}
    return [{k: float(v) for k, v in rows[e].items()} for e in sorted(rows)]


def run_trial(values, settings, train_set, val_set, run_dir, verbose="auto"):
    """Train one trial into run_dir and return (model, metrics, resumed_from_epoch).

    Interrupted trials continue from their last completed epoch (BackupAndRestore); a NaN loss
    stops training (TerminateOnNaN) and raises TrialFailed.
    """
    start = time.monotonic()
    # Set per trial: keras.backend.clear_session() between trials resets the dtype policy.
    keras.mixed_precision.set_global_policy("mixed_float16" if settings.mixed_precision else "float32")
    keras.utils.set_random_seed(settings.seed)  # same seed, same initial weights and dropout masks
    augment_seed = settings.seed if settings.augment_in_model else None
    model = build_model(values, settings.image_size, xla=settings.xla, augment_seed=augment_seed)
    first_epoch = _FirstEpoch()
    callbacks = [
        # CSVLogger before BackupAndRestore: a kill between the two repeats an epoch (its row is
        # then replaced, see read_history) rather than losing its row.
        keras.callbacks.CSVLogger(run_dir / HISTORY_FILE, append=True),
        keras.callbacks.BackupAndRestore(run_dir / "backup", double_checkpoint=True),  # survives a kill mid-save
        keras.callbacks.TensorBoard(run_dir, write_graph=False, profile_batch=0),
        keras.callbacks.TerminateOnNaN(),
        first_epoch,
    ]
    model.fit(
        pipeline.train_dataset(train_set, settings.batch_size, settings.seed, augmented=not settings.augment_in_model),
        steps_per_epoch=settings.steps_per_epoch,
        epochs=settings.epochs,
        validation_data=pipeline.validation_dataset(val_set, settings.batch_size),
        callbacks=callbacks,
        shuffle=False,  # train_dataset shuffles, seeded
        verbose=verbose,
    )
    history = read_history(run_dir / HISTORY_FILE)
    bad = [i for i, row in enumerate(history) if not math.isfinite(row["loss"])]
    if model.stop_training or bad or not history:
        raise TrialFailed(f"loss became NaN in epoch {(bad or [len(history)])[0] + 1}")
    last = history[-1]
    metrics = {
        H.METRIC_ACCURACY: last["val_accuracy"],
        H.METRIC_BEST_ACCURACY: max(row["val_accuracy"] for row in history),
        H.METRIC_VAL_LOSS: last["val_loss"],
        H.METRIC_WALL_TIME: round(time.monotonic() - start, 3),
    }
    return model, metrics, first_epoch.epoch or 0


# ----------------------------------------------------------------------------- logging a trial


def trial_name(values):
    """Run directory name: readable, stable, and unique per hparam combination."""
    return ",".join(f"{name}={value}" for name, value in values.items())


def write_json(path, obj):
    """Write JSON atomically, so a kill never leaves half a file behind."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def write_session(run_dir, values, name, status=None, metrics=None):
    """Write the HParams session start, or its end with a status and the summary metrics.

    hp.KerasCallback is not used: it always ends a session with STATUS_SUCCESS, and a failed
    or NaN trial must show as STATUS_FAILURE.
    """
    writer = tf.summary.create_file_writer(str(run_dir))
    with writer.as_default():
        if status is None:
            hp.hparams(values, trial_id=name)
        else:
            for tag, value in (metrics or {}).items():
                tf.summary.scalar(tag, value, step=0)
            pb = hp_summary.session_end_pb(status)
            tf.summary.experimental.write_raw_pb(pb.SerializeToString(), step=0)
    writer.close()


def environment():
    """Versions and device: what is needed to reproduce a trial's numbers."""
    gpus = tf.config.list_physical_devices("GPU")
    device = ", ".join(tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus)
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "device": device or f"CPU ({platform.machine()}, {os.cpu_count()} cores)",
        "platform": platform.platform(),
    }


def gradient_registry():
    """TensorFlow's global gradient registry (a private dict; empty if a TF release moves it)."""
    from tensorflow.python.framework import ops

    return getattr(getattr(ops, "gradient_registry", None), "_registry", {})


def release_memory(registered_before):
    """Free what a finished trial leaves in TensorFlow's global state.

    Each tf.custom_gradient Keras traces adds a 'CustomGradient-N' entry to TF's global gradient
    registry that is never removed; its closure keeps the trial's traced graphs alive (about
    75 MB a trial, whatever the model size), and clear_session() does not touch it. Removing the
    entries the trial added keeps a 36-trial grid's memory flat.
    """
    registry = gradient_registry()
    for name in set(registry) - registered_before:
        if name.startswith("CustomGradient-"):
            del registry[name]
    keras.backend.clear_session()
    gc.collect()


def resident_mb():
    """This process's resident memory now, in MiB (Linux; None elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


# ----------------------------------------------------------------------------- the experiment


def data_fingerprint(data_dir):
    """SHA-256 of data_split.py's manifest, or of the file list and sizes when there is none."""
    manifest = data_dir / data_split.MANIFEST
    digest = hashlib.sha256()
    if manifest.exists():
        digest.update(manifest.read_bytes())
    else:
        for path in sorted(p for split in data_split.SPLITS for p in (data_dir / split).rglob("*") if p.is_file()):
            digest.update(f"{path.relative_to(data_dir).as_posix()}\t{path.stat().st_size}\n".encode())
    return digest.hexdigest()


def check_data(data_dir):
    """Refuse, with what to do, a data folder train.py cannot read."""
    hint = f"run `python data_split.py --source PATH --dest {data_dir}` first, or `python train.py --demo`"
    if not (data_dir / "train").is_dir():
        raise UsageError(f"no training data in {data_dir}/train: {hint}")
    for split in data_split.SPLITS:
        split_dir = data_dir / split
        found = sorted(p.name for p in split_dir.iterdir() if p.is_dir()) if split_dir.is_dir() else []
        if found != sorted(data_split.CLASS_DIRS):
            raise UsageError(
                f"{split_dir} must hold exactly the folders {' and '.join(data_split.CLASS_DIRS)}/ "
                f"(found: {', '.join(found) or 'nothing'}): {hint}"
            )
        for cls in data_split.CLASS_DIRS:
            if not any(p.suffix.lower() in pipeline.IMAGE_SUFFIXES for p in (split_dir / cls).iterdir()):
                raise UsageError(f"{split_dir / cls} holds no images: {hint}")


def load_data(data_dir, image_size):
    """Decode both splits once; every trial and epoch reuses the arrays."""
    sets = []
    for split in data_split.SPLITS:
        try:
            sets.append(pipeline.load_split(data_dir / split, image_size))
        except tf.errors.InvalidArgumentError as e:
            raise UsageError(
                f"an image under {data_dir / split} cannot be decoded ({e.message.splitlines()[0]}): "
                f"rebuild the folder with data_split.py, which checks every image"
            ) from None
    return sets


def hparam_domains(hparams):
    """The grid's domains as plain JSON, to tell whether the experiment's config changed."""
    return {h.name: H.grid_values(h) for h in hparams}


def prepare_logdir(logdir, settings, hparams):
    """Create or check the experiment: its settings must match, its hparams_config is current."""
    logdir.mkdir(parents=True, exist_ok=True)
    recorded = data_split.read_json(logdir / EXPERIMENT_FILE)
    current = {"settings": asdict(settings), "domains": hparam_domains(hparams)}
    if recorded and recorded["settings"] != current["settings"]:
        changed = [
            f"{k} {recorded['settings'].get(k)} -> {v}"
            for k, v in current["settings"].items()
            if recorded["settings"].get(k) != v
        ]
        raise UsageError(
            f"{logdir} holds trials run with other settings ({'; '.join(changed)}): their results would "
            f"not be comparable. Use another --logdir, or --restart to move them aside"
        )
    if recorded != current:
        # The dashboard reads the experiment's domains and metrics from the logdir itself (the
        # parent of the run directories); a later config there supersedes an earlier one.
        writer = tf.summary.create_file_writer(str(logdir))
        with writer.as_default():
            hp.hparams_config(hparams=hparams, metrics=H.METRICS)
        writer.close()
        write_json(logdir / EXPERIMENT_FILE, current)


def lock_logdir(logdir):
    """Hold an exclusive lock on the logdir for this process's lifetime.

    flock locks die with their process, so a crashed or killed run never leaves a stale lock.
    The lock file sits beside the logdir so that --restart can move the logdir under it.
    """
    logdir.parent.mkdir(parents=True, exist_ok=True)
    lock_file = (logdir.parent / f".{logdir.name}.lock").open("a+")
    try:
        fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock_file.seek(0)
        owner = lock_file.read().strip() or "another process"
        raise UsageError(f"{logdir} is in use by {owner}; wait for it to finish or use another --logdir") from None
    lock_file.seek(0)
    lock_file.truncate()
    lock_file.write(f"train.py (pid {os.getpid()})")
    lock_file.flush()
    return lock_file


def move_aside(logdir):
    """--restart: move earlier results to a dated sibling folder (never delete them)."""
    if not logdir.exists() or not any(logdir.iterdir()):
        return None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = logdir.with_name(f"{logdir.name}-before-{stamp}")
    logdir.rename(target)
    return target


def ranked(records):
    """Finished trials, best first: successes by accuracy (then lower val loss), failures last."""

    def key(r):
        m = r.get("metrics") or {}
        return (r["status"] != "success", -m.get(H.METRIC_ACCURACY, 0.0), m.get(H.METRIC_VAL_LOSS, 0.0))

    return sorted(records, key=key)


def write_results(path, records, hparams):
    """results.csv: one row per trial of this grid, ranked, every hparam, the status and metrics."""
    columns = ["rank", "run"] + [h.name for h in hparams] + ["status"] + H.SUMMARY_METRICS + ["error"]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        for rank, r in enumerate(ranked(records), 1):
            writer.writerow(
                {"rank": rank, "run": r["name"], **r["hparams"], "status": r["status"], **r.get("metrics", {}),
                 "error": r.get("error") or ""}
            )
    os.replace(tmp, path)


def describe(values):
    return " ".join(f"{k}={v}" for k, v in values.items())


def minutes(seconds):
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def print_table(records):
    print("\nrank  accuracy  best_acc  val_loss   time  status   trial")
    for rank, r in enumerate(ranked(records), 1):
        m = r.get("metrics") or {}
        if r["status"] == "success":
            print(f"{rank:>4}  {m[H.METRIC_ACCURACY]:8.4f}  {m[H.METRIC_BEST_ACCURACY]:8.4f}  "
                  f"{m[H.METRIC_VAL_LOSS]:8.4f}  {minutes(m[H.METRIC_WALL_TIME]):>5}  success  {r['name']}")
        else:
            print(f"{rank:>4}  {'-':>8}  {'-':>8}  {'-':>8}  {'-':>5}  {r['status']:<7}  {r['name']}: {r.get('error')}")


def save_best(model, metrics, records, logdir):
    """Keep the best successful trial's model as logdir/best_model.keras (written atomically)."""
    best = ranked(records)[0] if records else None
    if best is not None and best["status"] == "success" and best["metrics"][H.METRIC_ACCURACY] >= metrics[H.METRIC_ACCURACY]:
        return
    tmp = logdir / "best_model.tmp.keras"
    model.save(tmp)
    os.replace(tmp, logdir / BEST_MODEL_FILE)


def run_grid(trials, settings, hparams, logdir, train_set, val_set, verbose):
    """Run every trial not already finished; return the records of the whole grid."""
    env = environment()
    finished, todo = [], []
    for values in trials:
        record = data_split.read_json(logdir / trial_name(values) / TRIAL_FILE)
        if record and record["status"] in FINISHED and record["settings"] == asdict(settings):
            finished.append(record)
        else:
            todo.append(values)
    others = {p.name for p in logdir.iterdir() if (p / TRIAL_FILE).exists()} - {trial_name(v) for v in trials}
    if finished:
        print(f"Reusing {len(finished)} finished trial(s) from {logdir}; {len(todo)} to run.")
    if others:
        print(f"{len(others)} other trial(s) in {logdir} are not in this grid: left as they are, not ranked.")

    records = list(finished)
    done_times = []
    for k, values in enumerate(todo, 1):
        name = trial_name(values)
        run_dir = logdir / name
        run_dir.mkdir(exist_ok=True)
        label = f"[{len(finished) + k}/{len(trials)}]"
        print(f"\n{label} {describe(values)}", flush=True)
        earlier = data_split.read_json(run_dir / TRIAL_FILE)  # an interrupted attempt of this trial, if any
        record = {
            "name": name, "hparams": values, "status": "running", "settings": asdict(settings),
            "seed": settings.seed, "command": shlex.join([sys.executable] + sys.argv), "environment": env,
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "metrics": {}, "error": None, "attempts": (earlier or {}).get("attempts", 0) + 1,
        }
        write_json(run_dir / TRIAL_FILE, record)
        write_session(run_dir, values, name)
        start = time.monotonic()
        model = None
        registered = set(gradient_registry())
        try:
            model, metrics, record["resumed_from_epoch"] = run_trial(values, settings, train_set, val_set, run_dir, verbose)
            record.update(status="success", metrics=metrics, dtype_policy=model.dtype_policy.name)
            save_best(model, metrics, records, logdir)
        except KeyboardInterrupt:
            record["status"] = "interrupted"
            write_json(run_dir / TRIAL_FILE, record)
            raise
        except Exception as e:  # noqa: BLE001 - one bad trial (NaN, OOM, a bad value) must not end the grid
            record.update(status="failure", error=f"{type(e).__name__}: {e}".splitlines()[0])
            record["traceback"] = traceback.format_exc()
        status = api_pb2.STATUS_SUCCESS if record["status"] == "success" else api_pb2.STATUS_FAILURE
        write_session(run_dir, values, name, status, record["metrics"])
        del model
        release_memory(registered)
        record["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        record["rss_mb"] = resident_mb()
        write_json(run_dir / TRIAL_FILE, record)
        records.append(record)
        write_results(logdir / RESULTS_FILE, records, hparams)

        done_times.append(time.monotonic() - start)
        eta = sum(done_times) / len(done_times) * (len(todo) - k)
        if record["status"] == "success":
            outcome = f"accuracy {record['metrics'][H.METRIC_ACCURACY]:.4f}"
        else:
            outcome = f"FAILED: {record['error']}"
        print(f"{label} {describe(values)} -> {outcome} ({minutes(done_times[-1])}, ETA {minutes(eta)})", flush=True)
    write_results(logdir / RESULTS_FILE, records, hparams)
    return records


# ----------------------------------------------------------------------------- command line


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Grid-search the cats-vs-dogs CNN; every trial is logged for TensorBoard's HParams dashboard.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", type=Path, help=f"folder with train/ and validation/, each holding cats/ and dogs/ "
                        f"(default: {DEFAULT_DATA}, or {DEMO_DATA} with --demo)")
    parser.add_argument("--logdir", type=Path, help=f"experiment folder, one run folder per trial "
                        f"(default: {DEFAULT_LOGDIR}, or {DEMO_LOGDIR} with --demo)")
    parser.add_argument("--demo", action="store_true", help="generate a synthetic dataset and run a small grid on it "
                        f"(image size {DEMO_IMAGE_SIZE}, {DEMO_EPOCHS} epochs, grid {' '.join(DEMO_GRID)})")
    parser.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                        help="replace one hparam's values for this run (repeatable); hparams.py holds the defaults")
    parser.add_argument("--image-size", type=int, help=f"images are resized to this square (default: {DEFAULT_IMAGE_SIZE})")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="images per training step")
    parser.add_argument("--epochs", type=int, help=f"epochs per trial (default: {DEFAULT_EPOCHS})")
    parser.add_argument("--steps-per-epoch", type=int, help="training steps per epoch (default: one pass over the training set)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seeds Python, NumPy, TensorFlow, data order and augmentation")
    parser.add_argument("--deterministic", action="store_true",
                        help="bitwise-reproducible metrics (TensorFlow op determinism; slower, turns XLA off)")
    add_device_flags(parser)
    parser.add_argument("--restart", action="store_true",
                        help="start the grid over; earlier results in --logdir are moved to a dated folder beside it")
    parser.add_argument("--quiet", action="store_true", help="no Keras per-epoch progress, only a line per trial")
    args = parser.parse_args(argv)
    for flag in ("image_size", "batch_size", "epochs", "steps_per_epoch"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be a positive whole number")
    # --demo changes the defaults, not what the user set explicitly.
    args.data = args.data or (DEMO_DATA if args.demo else DEFAULT_DATA)
    args.logdir = args.logdir or (DEMO_LOGDIR if args.demo else DEFAULT_LOGDIR)
    args.image_size = args.image_size or (DEMO_IMAGE_SIZE if args.demo else DEFAULT_IMAGE_SIZE)
    args.epochs = args.epochs or (DEMO_EPOCHS if args.demo else DEFAULT_EPOCHS)
    args.grid = (DEMO_GRID if args.demo else []) + args.grid
    resolve_device_flags(args)
    return args


DEVICE_FLAGS = {
    "xla": "compile each model with XLA",
    "mixed_precision": "float16 compute with float32 weights",
    "augment_in_model": "augment on the accelerator, as the model's first layer, instead of in the input pipeline",
}


def add_device_flags(parser):
    """--xla, --mixed-precision, --augment-in-model and their --no- forms."""
    for name, text in DEVICE_FLAGS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", action=argparse.BooleanOptionalAction,
                            help=f"{text} (default: on with a GPU, off on CPU)")


def resolve_device_flags(args):
    """Device flags the user left unset are on with a GPU and off on CPU."""
    gpu = bool(tf.config.list_physical_devices("GPU"))
    for name in DEVICE_FLAGS:
        if getattr(args, name) is None:
            setattr(args, name, gpu)


def make_settings(args, train_images):
    return Settings(
        data=str(args.data.resolve()),
        data_fingerprint=data_fingerprint(args.data),
        image_size=args.image_size,
        batch_size=args.batch_size,
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch or math.ceil(train_images / args.batch_size),
        seed=args.seed,
        deterministic=args.deterministic,
        # Op determinism switches XLA off anyway; say so in the settings rather than pretend.
        xla=args.xla and not args.deterministic,
        mixed_precision=args.mixed_precision,
        augment_in_model=args.augment_in_model,
    )


def main(argv=None):
    """Run the grid; exit code 0 when every trial succeeded, 1 when one failed, 2 for a usage
    error, 130 when interrupted (rerun the same command to resume)."""
    args = parse_args(argv)
    try:
        return _main(args)
    except (UsageError, H.GridError, data_split.SplitError) as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\nInterrupted. Finished trials are saved and an interrupted one resumes from its last "
              "completed epoch: rerun the same command to continue.", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(args):
    hparams = H.override(H.HPARAMS, args.grid)
    trials = H.expand_grid(hparams)
    if args.demo:
        data_split.prepare_demo(args.data)
    check_data(args.data)

    lock = lock_logdir(args.logdir)
    if args.restart and (moved := move_aside(args.logdir)):
        print(f"Earlier results moved to {moved}")

    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    t0 = time.monotonic()
    train_set, val_set = load_data(args.data, args.image_size)
    settings = make_settings(args, len(train_set))
    print(f"Decoded {len(train_set)} training and {len(val_set)} validation images at "
          f"{args.image_size}x{args.image_size} in {time.monotonic() - t0:.1f} s (once for all {len(trials)} trials). "
          f"XLA {'on' if settings.xla else 'off'}, mixed precision {'on' if settings.mixed_precision else 'off'}, "
          f"augmentation {'in the model' if settings.augment_in_model else 'in the input pipeline'}.")
    prepare_logdir(args.logdir, settings, hparams)

    records = run_grid(trials, settings, hparams, args.logdir, train_set, val_set, 0 if args.quiet else "auto")
    lock.close()
    print_table(records)
    failed = [r for r in records if r["status"] != "success"]
    print(f"\n{len(records) - len(failed)} of {len(records)} trials succeeded; results in {args.logdir / RESULTS_FILE}")
    if failed:
        print(f"{len(failed)} failed: " + "; ".join(f"{r['name']} ({r['error']})" for r in failed))
    print(f"See them all:  tensorboard --logdir {args.logdir}")
    return EXIT_TRIAL_FAILED if failed else 0


if __name__ == "__main__":
    sys.exit(main())
