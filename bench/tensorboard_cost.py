"""What the Graphs, Distributions and Histograms tabs cost a trial: time and disk, at 150 px and 64 px.

    # The measurement (2026-12-07): bench/results/tensorboard-cpu-2core-2026-12-07.json
    python bench/tensorboard_cost.py --json tensorboard.json
    # A quick smoke run:
    python bench/tensorboard_cost.py --sizes 32 --epochs 1 --steps-per-epoch 2

Per image size (--sizes), on the photos (--data, the 4,000 flat cat.N.jpg / dog.N.jpg, split once by
data_split.py with its default seed), the tutorial's CNN at its largest (512 units, dropout 0.2,
adam, learning rate 0.001):
  1. one trial through train.main for --epochs epochs of a full pass over the training split, with
     --histograms and with --no-histograms (each in its own logdir, same seed): seconds per epoch
     (trial.json's wall time over its epochs) and the bytes of what the run folder holds for
     TensorBoard (train/'s event files: curves and histograms; the run's own: the HParams session
     and both graphs), beside model.keras for scale;
  2. the same model in this process: runlog.EpochLog writing --micro-epochs epochs' logs with the
     weight histograms and without (seconds and bytes per epoch: the histograms' own cost, its
     re-reading of the earlier epochs' included), runlog.write_graph and runlog.write_op_graph
     (seconds, bytes), and for scale the model's first training step (Keras' own trace included).
Run alone: anything beside it on 2 cores halves the figures (the JSON holds the load average).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import train  # noqa: E402
from bench import machine  # noqa: E402
from hparam_sweep import metrics  # noqa: E402
from hparam_sweep.common import read_json  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from search import CHOICE_SPLIT_SEED, DEFAULT_DATA, split_photos  # noqa: E402

VALUES = {"num_units": 512, "dropout": 0.2, "optimizer": "adam", "learning_rate": 0.001}


def folder_bytes(folder, pattern="events.out.tfevents*"):
    return sum(p.stat().st_size for p in Path(folder).glob(pattern))


def one_trial(data, logdir, size, args, histograms):
    """train.main on one trial: its seconds per epoch and the bytes of its run folder's logs."""
    argv = ["--data", str(data), "--logdir", str(logdir), "--image-size", str(size), "--epochs", str(args.epochs),
            "--seed", "1", "--quiet", "--histograms" if histograms else "--no-histograms",
            *[a for name, value in VALUES.items() for a in ("--grid", f"{name}={value}")]]
    if args.steps_per_epoch:
        argv += ["--steps-per-epoch", str(args.steps_per_epoch)]
    if train.main(argv) != 0:
        raise SystemExit(f"bench/tensorboard_cost.py: the trial at {size} px failed (see above)")
    [run] = [p for p in logdir.iterdir() if (p / "trial.json").exists()]
    record = read_json(run / "trial.json")
    return {"seconds_per_epoch": round(record["metrics"][metrics.WALL_TIME] / record["epochs"], 2),
            "train_events_bytes": folder_bytes(run / "train"), "run_events_bytes": folder_bytes(run),
            "model_keras_bytes": (run / "model.keras").stat().st_size}


def in_process(size, args, tmp):
    """The histograms', the Keras graph's and the op graph's own cost, measured on their own."""
    import keras
    import numpy as np

    from hparam_sweep import runlog
    from hparam_sweep.model import build_model

    keras.utils.set_random_seed(1)
    model = build_model(VALUES, size)
    x = np.random.default_rng(1).random((32, size, size, 3), np.float32)
    y = keras.utils.to_categorical(np.arange(32) % 2, 2)
    figures = {}
    for histograms in (True, False):
        folder = tmp / f"epochlog-{size}-{histograms}"
        folder.mkdir()
        log, rows, seconds, sizes = runlog.EpochLog(folder), [], [], []
        for epoch in range(args.micro_epochs):
            rows.append({"epoch": epoch, "accuracy": 0.5, "loss": 0.69, "val_accuracy": 0.5, "val_loss": 0.69})
            start = time.perf_counter()
            log.write(rows, model if histograms else None)
            seconds.append(time.perf_counter() - start)
            sizes.append(folder_bytes(folder / "train"))
        log.close()
        figures[histograms] = {"seconds_per_epoch": seconds, "train_bytes_after_each_epoch": sizes}
    with_, without = figures[True], figures[False]
    histogram = {
        "weights": len(runlog.weight_tags(model)), "parameters": model.count_params(),
        "seconds_per_epoch_first_last": [round(with_["seconds_per_epoch"][i] - without["seconds_per_epoch"][i], 4)
                                         for i in (0, -1)],
        "bytes_per_epoch": round((with_["train_bytes_after_each_epoch"][-1]
                                  - without["train_bytes_after_each_epoch"][-1]) / args.micro_epochs),
    }
    start = time.perf_counter()
    runlog.write_graph(tmp / f"graph-{size}", model)
    graph = {"seconds": round(time.perf_counter() - start, 4), "bytes": folder_bytes(tmp / f"graph-{size}")}
    model.optimizer.build(model.trainable_variables)  # as trial.Backup builds them before write_op_graph
    model.compute_metrics(x, y, model(x, training=False))
    (tmp / f"op-graph-{size}").mkdir()
    start = time.perf_counter()
    runlog.write_op_graph(tmp / f"op-graph-{size}", model, (x, y))
    op_graph = {"seconds": round(time.perf_counter() - start, 4), "bytes": folder_bytes(tmp / f"op-graph-{size}")}
    start = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    return {"histograms": histogram, "keras_graph": graph, "op_graph": op_graph,
            "for_scale_first_step_seconds": round(time.perf_counter() - start, 3)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the flat photos (default: %(default)s)")
    parser.add_argument("--sizes", default="150,64", help="image sizes (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each trial (default: %(default)s)")
    parser.add_argument("--steps-per-epoch", type=int, help="default: a full pass over the training split")
    parser.add_argument("--micro-epochs", type=int, default=10, help="epochs of EpochLog writes (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write the figures here as well")
    args = parser.parse_args(argv)
    results = {"machine": machine(), "values": VALUES, "epochs": args.epochs, "steps_per_epoch": args.steps_per_epoch,
               "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = split_photos(args.data, tmp / "data", CHOICE_SPLIT_SEED)
        for size in map(int, args.sizes.split(",")):
            trials = {f"histograms_{'on' if on else 'off'}": one_trial(data, tmp / f"logs-{size}-{on}", size, args, on)
                      for on in (True, False)}
            results["sizes"][size] = {"trial": trials, "in_process": in_process(size, args, tmp)}
            print(json.dumps({size: results["sizes"][size]}, indent=1), flush=True)
    results["machine"]["load_average_1_5_15_at_end"] = machine()["load_average_1_5_15"]
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
