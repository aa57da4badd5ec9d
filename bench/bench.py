"""Benchmark this project's input pipeline and training against the tutorial's ImageDataGenerator.

    python bench/bench.py --data data --json bench.json               # a data_split.py folder
    python bench/bench.py --data ~/dogs-vs-cats/train --json bench.json  # flat cat.N.jpg / dog.N.jpg files
    python bench/bench.py --data data --images 400 --steps 4           # a quick smoke run
    python bench/bench.py --data data --json bench-gpu.json --compare-precision   # on a GPU

One run measures, on the same images, model and machine:
  (a) images/s delivered by each training input pipeline (ours after its one-off decode, which is
      timed on its own; the tutorial's ImageDataGenerator decodes and warps every batch),
  (b) end-to-end training images/s of the same network fed by each pipeline,
  (c) the per-trial fixed cost (model build + compile, datasets, first training step),
  (d) the wall time of a small grid through the real driver, train.main().
It prints a table and writes every figure, the machine and the two speed-ups to --json.
A flat Kaggle folder is split 80/20 per class into a temporary folder of symlinks; the source is
only read.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter out of the way

import argparse
import datetime
import functools
import math
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/bench.py` from the repo root

import keras
import tensorflow as tf

import hparams as H
import train
from hparam_sweep import common, device, grid, metrics, pipeline, trial
from hparam_sweep.model import build_model

# The tutorial's trial: the model every comparison below trains.
TUTORIAL_HPARAMS = {"num_units": 512, "dropout": 0.2, "optimizer": "adam", "learning_rate": 0.001}
# The tutorial's training augmentation, verbatim; its validation generator only rescaled.
TUTORIAL_AUGMENTATION = dict(rescale=1.0 / 255, rotation_range=45, width_shift_range=0.15,
                             height_shift_range=0.15, horizontal_flip=True, zoom_range=0.3)
VAL_FRACTION = 0.2  # a flat folder is split like data_split.py's default
FLAT_NAME = re.compile(r"^(cat|dog)\.(\d+)\.(jpe?g|png)$", re.IGNORECASE)  # Kaggle's cat.12.jpg

# Step counts per machine: on 2 CPU cores the model trains at ~15-20 images/s, so a few training
# steps already take a minute; a GPU needs many more steps for a stable rate.
CPU_DEFAULTS = dict(
    # Each rate is the best of this many turns, the pipelines taking turns: on a shared 2-core
    # machine another process can halve one window's rate, and more, shorter windows filter that.
    rounds=3,
    input_batches=30,  # the tutorial's generator makes ~150-400 images/s on one core
    warmup=2,  # the first step traces the model, the second runs it warm
    steps=8,  # ~1.7 s a step: 3 rounds of both pipelines take about two minutes
    trials=3,  # fixed-cost trials to average
    grid=["num_units=512", "dropout=0.2", "optimizer=adam,sgd", "learning_rate=0.001"],  # 2 trials
    grid_steps=5,  # a full epoch takes minutes; validating 800 images already takes ~15 s a trial
    compare_steps=20,
)
GPU_DEFAULTS = dict(
    rounds=3,
    input_batches=100,  # the tutorial's single-threaded generator sets the pace here too
    warmup=20,  # XLA compiles on the first step; the rest lets clocks and autotuning settle
    steps=200,
    trials=5,
    grid=["num_units=512", "dropout=0.2", "optimizer=adam,sgd", "learning_rate=0.001,0.0001"],  # 4 trials
    grid_steps=None,  # full epochs, as a real grid runs them
    compare_steps=500,  # enough for a validation accuracy worth comparing
)

# What the issue asks of a 2-core CPU at 150x150.
FLOOR_INPUT_SPEEDUP = 5.0
FLOOR_TRAIN_SPEEDUP = 1.0


# ----------------------------------------------------------------------------- the data


def split_files(data, cap):
    """{(split, class): [image files]} from DIR's train/ and validation/ folders, or from flat
    cat.N.jpg / dog.N.jpg files split 80/20 per class in number order; `cap` limits the total."""
    if (data / "train").is_dir():
        files = {(s, c): sorted(p for p in (data / s / c).iterdir() if p.is_file())
                 for s in common.SPLITS for c in common.CLASS_DIRS}
        keep = min(1.0, cap / sum(map(len, files.values()))) if cap else 1.0
        return {key: paths[:max(1, round(len(paths) * keep))] for key, paths in files.items()}

    by_class = {c: [] for c in common.CLASS_DIRS}
    for path in data.iterdir():
        if (m := FLAT_NAME.match(path.name)) and path.is_file():
            by_class[m[1].lower() + "s"].append((int(m[2]), path))
    if not all(by_class.values()):
        raise common.UsageError(f"{data} holds neither train/ and validation/ folders nor cat.N.jpg and "
                               f"dog.N.jpg files; point --data at one of those")
    files = {}
    for cls, numbered in by_class.items():
        paths = [p for _, p in sorted(numbered)][: cap // 2 if cap else None]
        n_val = max(1, round(len(paths) * VAL_FRACTION))
        files["train", cls], files["validation", cls] = paths[:-n_val], paths[-n_val:]
    return files


def prepare_split(data, cap, dest):
    """A folder in the layout both pipelines read: DIR itself when it has one and no cap applies,
    else dest/{train,validation}/{cats,dogs}/ holding symlinks, so that both pipelines read the
    very same files without a byte of the source being copied or changed."""
    split_layout = (data / "train").is_dir()
    if split_layout:
        pipeline.check_data(data)
        if not cap:
            return data
    for (split, cls), paths in split_files(data, cap).items():
        folder = dest / split / cls
        folder.mkdir(parents=True)
        for path in paths:
            (folder / path.name).symlink_to(path.resolve())
    return dest


# ----------------------------------------------------------------------------- the two pipelines


def project_inputs(train_set, val_set, args):
    """This project's training and validation datasets, as trial.fit makes them."""
    return (pipeline.train_dataset(train_set, args.batch_size, args.seed, augmented=not args.augment_in_model),
            pipeline.validation_dataset(val_set, args.batch_size))


def tutorial_inputs(split_dir, args):
    """The tutorial's training and validation generators: JPEGs decoded and warped every batch."""
    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    size = (args.image_size, args.image_size)
    return (ImageDataGenerator(**TUTORIAL_AUGMENTATION).flow_from_directory(
                split_dir / "train", target_size=size, batch_size=args.batch_size, class_mode="categorical",
                seed=args.seed),
            ImageDataGenerator(rescale=1.0 / 255).flow_from_directory(
                split_dir / "validation", target_size=size, batch_size=args.batch_size, class_mode="categorical"))


def project_model(args):
    """The tutorial's trial as train.py builds it: uint8 input, Rescaling as its first layer."""
    return build_model(TUTORIAL_HPARAMS, args.image_size, xla=args.xla,
                             augment_seed=args.seed if args.augment_in_model else None)


def tutorial_model(args):
    """The same network for the tutorial's float input in [0, 1].

    The generator already rescales (as in the tutorial), so this is build_model's model minus its
    Rescaling layer: the same layers, initial weights (same seed), optimizer, XLA and precision.
    Multiplying the generator's output back to uint8 instead would charge the baseline for work
    the tutorial never did.
    """
    ours = build_model(TUTORIAL_HPARAMS, args.image_size, xla=args.xla)  # the generator augments
    model = keras.Sequential([keras.Input((args.image_size, args.image_size, 3)), *ours.layers[1:]])
    model.compile_from_config(ours.get_compile_config())
    return model


# ----------------------------------------------------------------------------- measurements


def fresh_session(mixed_precision, seed):
    """Clear Keras' global state as trial.run does between trials, and reseed. clear_session
    also resets the dtype policy to float32, so the precision is set again."""
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
    keras.utils.set_random_seed(seed)


def alternate(rounds, **measurements):
    """Run each measurement `rounds` times, taking turns so that a busy spell on the machine hits
    them alike, and keep each one's fastest run: other processes only ever slow a run down."""
    runs = {name: [] for name in measurements}
    for _ in range(rounds):
        for name, measure in measurements.items():
            runs[name].append(measure())
    best = {name: max(r, key=lambda run: run["images_per_s"]) for name, r in runs.items()}
    return {name: {**best[name], "runs_images_per_s": [run["images_per_s"] for run in r]} for name, r in runs.items()}


def input_rate(batches, warmup, count):
    """Steady-state images/s of an iterator of (images, labels) batches."""
    for _ in range(warmup):
        next(batches)
    images, start = 0, time.perf_counter()
    for _ in range(count):
        images += len(next(batches)[0])
    seconds = time.perf_counter() - start
    return {"images_per_s": images / seconds, "images": images, "seconds": seconds}


class StepClock(keras.callbacks.Callback):
    """Wall-clock time at the end of chosen training steps, counted across epochs; stops training
    after the last. Keras converts a custom callback's logs to Python floats, so a step has
    finished on the device by the time its end is timed."""

    def __init__(self, *marks):
        super().__init__()
        self.marks, self.step, self.times = set(marks), 0, {}

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step in self.marks:
            self.times[self.step] = time.perf_counter()
        if self.step >= max(self.marks):
            self.model.stop_training = True


def train_rate(model, data, batch_size, warmup, steps, steps_per_epoch=None):
    """Training images/s over `steps` steps after `warmup` steps.

    The tutorial's generator ends its epoch after one pass, so it trains in whole epochs of
    `steps_per_epoch` batches (the sample count assumes full batches: exact when the training
    set is a multiple of the batch size, a partial batch's worth off otherwise).
    """
    total = warmup + steps
    steps_per_epoch = steps_per_epoch or total
    clock = StepClock(warmup, total)
    model.fit(data, steps_per_epoch=steps_per_epoch, epochs=math.ceil(total / steps_per_epoch),
              callbacks=[clock], shuffle=False, verbose=0)  # both inputs shuffle themselves
    seconds = clock.times[total] - clock.times[warmup]
    return {"images_per_s": steps * batch_size / seconds, "steps": steps, "seconds": seconds}


def fixed_cost(make_model, make_inputs, args):
    """Mean seconds a fresh trial spends before its first step is done, split into its parts."""
    parts = []
    for _ in range(args.trials):
        fresh_session(args.mixed_precision, args.seed)
        start = time.perf_counter()
        model = make_model()
        built = time.perf_counter()
        train_data, _ = make_inputs()
        ready = time.perf_counter()
        clock = StepClock(1)
        model.fit(train_data, steps_per_epoch=1, epochs=1, callbacks=[clock], shuffle=False, verbose=0)
        parts.append((built - start, ready - built, clock.times[1] - ready, clock.times[1] - start))
        del model, train_data
    names = ("build_compile_s", "datasets_s", "first_step_s", "total_s")
    means = {name: sum(p[i] for p in parts) / args.trials for i, name in enumerate(names)}
    return {**means, "trials": args.trials, "total_per_trial_s": [p[3] for p in parts]}


def run_grid(split_dir, logdir, args):
    """Wall time of a small grid through train.main(), the real driver, decode included."""
    argv = ["--data", str(split_dir), "--logdir", str(logdir), "--image-size", str(args.image_size),
            "--batch-size", str(args.batch_size), "--epochs", str(args.grid_epochs), "--seed", str(args.seed),
            "--quiet", "--xla" if args.xla else "--no-xla",
            "--mixed-precision" if args.mixed_precision else "--no-mixed-precision",
            "--augment-in-model" if args.augment_in_model else "--no-augment-in-model"]
    if args.grid_steps:
        argv += ["--steps-per-epoch", str(args.grid_steps)]
    for spec in args.grid:
        argv += ["--grid", spec]
    trials = len(grid.expand_grid(grid.override(H.HPARAMS, args.grid)))
    start = time.perf_counter()
    exit_code = train.main(argv)
    wall = time.perf_counter() - start
    return {"trials": trials, "epochs": args.grid_epochs, "steps_per_epoch": args.grid_steps, "grid": args.grid,
            "wall_s": wall, "trials_per_min": trials / wall * 60, "exit_code": exit_code}


def compare_precision(train_set, val_set, args):
    """Validation accuracy and training images/s after a short training in float32 without XLA,
    and with XLA plus mixed precision: does the speed cost accuracy?"""
    results = {}
    for label, fast in (("float32", False), ("xla+mixed_float16", True)):
        fresh_session(fast, args.seed)
        model = build_model(TUTORIAL_HPARAMS, args.image_size, xla=fast,
                            augment_seed=args.seed if args.augment_in_model else None)
        train_data, val_data = project_inputs(train_set, val_set, args)
        rate = train_rate(model, train_data, args.batch_size, args.warmup, args.compare_steps)
        scores = model.evaluate(val_data, verbose=0, return_dict=True)
        results[label] = {**rate, "val_accuracy": scores[metrics.ACCURACY], "val_loss": scores["loss"]}
    return results


# ----------------------------------------------------------------------------- report


def machine():
    """CPU, cores, GPU, versions and load: what decides the figures."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux
        cpuinfo = []
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), None)
    return {
        **trial.environment(),
        "cpu": cpu or platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "gpu": [tf.config.experimental.get_device_details(g).get("device_name", g.name)
                for g in tf.config.list_physical_devices("GPU")],
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        # Other processes on the machine slow both pipelines; the load says whether they ran.
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }


def ratio(ours, theirs):
    """How many times this project's images/s the tutorial's is."""
    return ours["images_per_s"] / theirs["images_per_s"]


def print_report(r):
    """The table, the two speed-ups and whether the floors are met."""
    s, a, b, c, d = r["settings"], r["input"], r["train"], r["fixed_cost"], r["grid"]
    print(f"\nBench: {s['train_images']} training / {s['validation_images']} validation images at "
          f"{s['image_size']}x{s['image_size']}, batch {s['batch_size']}, XLA {'on' if s['xla'] else 'off'}, "
          f"mixed precision {'on' if s['mixed_precision'] else 'off'}, "
          f"augmentation {'in the model' if s.get('augment_in_model') else 'in the input pipeline'}; "
          f"{r['machine']['device']}")
    print(f"{'':38}{'this project':>14}{'tutorial':>12}{'ratio':>9}")
    for label, ours, theirs in (("training input, images/s", a["project"], a["tutorial"]),
                                ("validation input, images/s", a["project_validation"], a["tutorial_validation"]),
                                ("training end to end, images/s", b["project"], b["tutorial"])):
        print(f"{label:38}{ours['images_per_s']:14.1f}{theirs['images_per_s']:12.1f}{ratio(ours, theirs):8.2f}x")
    for label, key in (("per-trial fixed cost (to 1st step), s", "total_s"),
                       ("  model build + compile, s", "build_compile_s"),
                       ("  datasets, s", "datasets_s"),
                       ("  first training step, s", "first_step_s")):
        print(f"{label:38}{c['project'][key]:14.2f}{c['tutorial'][key]:12.2f}")
    print(f"{'decode once (both splits), s':38}{r['decode']['seconds']:14.2f}{'every batch':>12}  "
          f"({r['decode']['images_per_s']:.0f} images/s)")
    steps = f"{d['steps_per_epoch']} steps" if d["steps_per_epoch"] else "full epochs"
    print(f"grid via train.main: {d['trials']} trials x {d['epochs']} epoch(s) of {steps}: {d['wall_s']:.1f} s, "
          f"{d['trials_per_min']:.2f} trials/min (exit code {d['exit_code']})")
    for label, v in (r.get("compare_precision") or {}).items():
        print(f"  {label:>18}: {v['images_per_s']:.1f} images/s, val accuracy {v['val_accuracy']:.4f} "
              f"after {v['steps']} steps")
    print(f"\ninput_speedup {r['input_speedup']:.2f}x, train_speedup {r['train_speedup']:.2f}x")
    for name, floor in r["floors"].items():
        print(f"  floor {name}: {'met' if floor['met'] else 'NOT met'} "
              f"({floor['value']:.2f}x, want >= {floor['want']}x)")


# ----------------------------------------------------------------------------- command line


def positive(text):
    """argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive whole number")
    return value


def per_device(name):
    """Help text for a flag whose default depends on whether there is a GPU."""
    def show(value):
        return "full epochs" if value is None else " ".join(value) if isinstance(value, list) else value
    return f"(default: {show(CPU_DEFAULTS[name])} on CPU, {show(GPU_DEFAULTS[name])} with a GPU)"


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="Compare this project's input pipeline and training with the tutorial's ImageDataGenerator.")
    parser.add_argument("--data", type=Path, required=True,
                        help="a data_split.py folder (train/ and validation/, each with cats/ and dogs/) "
                             "or a flat folder of cat.N.jpg and dog.N.jpg files")
    parser.add_argument("--json", type=Path, help="write every figure and the machine here")
    parser.add_argument("--images", type=positive, help="use at most this many images in all (default: every one)")
    parser.add_argument("--image-size", type=positive, default=train.DEFAULT_IMAGE_SIZE,
                        help="square image side (default: %(default)s)")
    parser.add_argument("--batch-size", type=positive, default=train.DEFAULT_BATCH_SIZE,
                        help="images per batch (default: %(default)s)")
    parser.add_argument("--grid", action="append", metavar="NAME=V1,V2",
                        help=f"the timed grid, as train.py's --grid (repeatable) {per_device('grid')}")
    parser.add_argument("--grid-epochs", type=positive, default=1,
                        help="epochs per trial of the timed grid (default: %(default)s)")
    for name, text in (("rounds", "turns each pipeline takes at the input and training timings; the fastest counts"),
                       ("input_batches", "batches per timing of an input pipeline"),
                       ("warmup", "untimed first batches or training steps"),
                       ("steps", "timed training steps per pipeline"),
                       ("trials", "fresh trials averaged for the fixed cost"),
                       ("grid_steps", "steps per epoch of the timed grid"),
                       ("compare_steps", "training steps of each --compare-precision run")):
        parser.add_argument(f"--{name.replace('_', '-')}", type=positive, help=f"{text} {per_device(name)}")
    device.add_flags(parser)
    parser.add_argument("--compare-precision", action="store_true",
                        help="also train briefly in float32 without XLA and with XLA + mixed precision, "
                             "and report both validation accuracies (meant for a GPU)")
    parser.add_argument("--seed", type=int, default=train.DEFAULT_SEED,
                        help="seeds weights, data order and augmentation (default: %(default)s)")
    args = parser.parse_args(argv)

    if not args.data.is_dir():
        parser.error(f"--data {args.data} is not a folder")
    gpu = bool(tf.config.list_physical_devices("GPU"))
    for name, value in (GPU_DEFAULTS if gpu else CPU_DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    device.resolve_flags(args, gpu)
    try:
        grid.override(H.HPARAMS, args.grid)
    except grid.GridError as e:
        parser.error(str(e))
    return args


def main(argv=None):
    """Run every measurement, print the table, write --json; exit code 2 for a usage error."""
    args = parse_args(argv)
    try:
        import scipy  # noqa: F401 - the legacy ImageDataGenerator warps with scipy.ndimage
    except ImportError:
        raise SystemExit("bench.py: error: the tutorial's ImageDataGenerator needs scipy: pip install -e '.[bench]'") from None
    try:
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            return _main(args, Path(tmp))
    except common.UsageError as e:
        print(f"bench.py: error: {e}", file=sys.stderr)
        return train.EXIT_USAGE


def _main(args, workdir):
    split_dir = prepare_split(args.data, args.images, workdir / "data")
    report = {"machine": machine()}

    start = time.perf_counter()
    train_set, val_set = pipeline.load_data(split_dir, args.image_size)
    decode_s = time.perf_counter() - start
    n_images = len(train_set) + len(val_set)
    report["decode"] = {"seconds": decode_s, "images": n_images, "images_per_s": n_images / decode_s}
    report["settings"] = {
        "data": str(args.data.resolve()), "split": "own folders" if split_dir == args.data else "80/20 symlinks",
        "train_images": len(train_set), "validation_images": len(val_set), "image_size": args.image_size,
        "batch_size": args.batch_size, "xla": args.xla, "mixed_precision": args.mixed_precision,
        "augment_in_model": args.augment_in_model, "seed": args.seed,
        "rounds": args.rounds, "input_batches": args.input_batches, "warmup": args.warmup, "steps": args.steps,
        "tutorial_hparams": TUTORIAL_HPARAMS, "tutorial_augmentation": TUTORIAL_AUGMENTATION,
    }
    print(f"Decoded {n_images} images in {decode_s:.1f} s; timing the input pipelines ...", flush=True)

    ours_train, ours_val = project_inputs(train_set, val_set, args)
    gen_train, gen_val = tutorial_inputs(split_dir, args)
    if gen_train.samples != len(train_set) or gen_val.samples != len(val_set):
        print(f"warning: the tutorial's generators found {gen_train.samples} + {gen_val.samples} images, "
              f"Keras found {len(train_set)} + {len(val_set)}", file=sys.stderr)
    batches = {"project": iter(ours_train), "tutorial": gen_train,
               "project_validation": iter(ours_val.repeat()), "tutorial_validation": gen_val}
    report["input"] = alternate(args.rounds, **{
        name: functools.partial(input_rate, it, args.warmup, args.input_batches) for name, it in batches.items()})

    print("Timing training, both pipelines ...", flush=True)
    fresh_session(args.mixed_precision, args.seed)
    ours_model = project_model(args)
    keras.utils.set_random_seed(args.seed)  # the same initial weights for the baseline
    their_model = tutorial_model(args)
    gen_train, _ = tutorial_inputs(split_dir, args)
    report["train"] = alternate(
        args.rounds,
        project=lambda: train_rate(ours_model, ours_train, args.batch_size, args.warmup, args.steps),
        tutorial=lambda: train_rate(their_model, gen_train, args.batch_size, args.warmup, args.steps,
                                    steps_per_epoch=len(gen_train)),
    )

    print("Timing the per-trial fixed cost ...", flush=True)
    report["fixed_cost"] = {
        "project": fixed_cost(lambda: project_model(args), lambda: project_inputs(train_set, val_set, args), args),
        "tutorial": fixed_cost(lambda: tutorial_model(args), lambda: tutorial_inputs(split_dir, args), args),
    }

    print("Timing a small grid through train.main ...", flush=True)
    report["grid"] = run_grid(split_dir, workdir / "logs", args)
    if args.compare_precision:
        print("Comparing float32 with XLA + mixed precision ...", flush=True)
        report["compare_precision"] = compare_precision(train_set, val_set, args)

    report["input_speedup"] = ratio(report["input"]["project"], report["input"]["tutorial"])
    report["train_speedup"] = ratio(report["train"]["project"], report["train"]["tutorial"])
    report["floors"] = {
        "input_speedup": {"value": report["input_speedup"], "want": FLOOR_INPUT_SPEEDUP,
                          "met": report["input_speedup"] >= FLOOR_INPUT_SPEEDUP},
        "train_speedup": {"value": report["train_speedup"], "want": FLOOR_TRAIN_SPEEDUP,
                          "met": report["train_speedup"] >= FLOOR_TRAIN_SPEEDUP},
    }
    report["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print_report(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        common.write_json(args.json, report)
        print(f"\nAll figures in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
