"""hparam_sweep: the search tool behind train.py, data_split.py and hparams.py.

The modules, each with one job; imports go one way, down this list (tests/test_structure.py
checks it, and that nothing here imports a top-level script: configuration comes in from
train.py as arguments):

    loop.py        the one search loop, and the in-process executor
    parallel.py    the Ray executor
    sampler.py     which configurations are tried (--sampler): the grid, seeded random draws, or TPE (Optuna)
    search.py      the Search interface; Grid, Halving, Sequential: which trials run next, to how many epochs; the ranking
    experiment.py  the logdir: settings check, lock, results.csv, halving.json, best_model.keras
    evaluate.py    the chosen model's one test score
    report.py      the experiment's own runs: the chosen model on the test split, the summary text
    trial.py       one trial in its run folder: train, resume, record
    backup.py      a trial's training state, backed up every few minutes and at each epoch end
    runlog.py      what a run folder holds for TensorBoard: history.csv, curves, histograms, session, graphs
    modelfile.py   the model a trial trains: the CNN or --model-file's build_model, checked before the sweep
    model.py       build_model: the CNN, its compile and the kept inference model; a model file's contract
    pipeline.py    the images: checked, decoded once, served as batches
    splitting.py   data_split.py's work: check, split and place the images of a source
    sources.py     what a source holds: folders, zips, nested zips, and each image's class
    images.py      the one decode: a file to upright RGB pixels and the model's input (predict.py's too)
    augment.py     the tutorial's augmentation as one affine warp per image
    imagecache.py  the decode cache
    grid.py        hparam domains -> the grid's combinations; --grid overrides
    naming.py      run folder names (Trial IDs), without TensorFlow
    metrics.py     metric names, the dashboard's hp.Metric list; the objective: what ranks trials, when early stopping stops
    demo.py        the synthetic images of --demo
    console.py     TensorFlow's noise kept off stderr; progress lines
    device.py      the GPUs TensorFlow sees, the device flags and their defaults
    hooks.py       test hooks: kill or pause a trial at a named point
    common.py      small shared names, UsageError, JSON files
"""
