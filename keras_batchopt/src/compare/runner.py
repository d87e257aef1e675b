"""Trains small models over several seeds and reports how they compare.

Two jobs share the machinery here:

- `run_comparison()`: one model, several optimizers (optionally with their
  learning rates tuned on a validation split first);
- `run_layer_comparison()`: one model and optimizer, several normalization
  layers, at several batch sizes (a micro-batch and a large one).

Every run of a job with the same seed starts from the same initial weights
(when the models have the same shapes) and sees the same batches in the
same order; the seeds `seed, seed + 1, ...` change both. The data split is
the same for all seeds. The command line in `cli.py` is a thin layer over
these functions. Only Keras and NumPy are imported here; matplotlib is
imported inside `report.plot_curves()` and is optional.
"""

import math
import os
import sys
import tempfile
import time

import keras
import numpy as np

from keras_batchopt.curvature import enable_hessian_training
from keras_batchopt.src.compare import catalog
from keras_batchopt.src.compare import data
from keras_batchopt.src.compare import report as reporting
from keras_batchopt.src.compare.catalog import DEFAULT_OPTIMIZERS
from keras_batchopt.src.compare.catalog import OPTIMIZERS
from keras_batchopt.src.compare.catalog import make_optimizer
from keras_batchopt.src.compare.catalog import optimizer_settings
from keras_batchopt.src.compare.models import MODELS
from keras_batchopt.src.compare.models import build_model
from keras_batchopt.src.compare.report import plot_curves

__all__ = [
    "DEFAULT_OPTIMIZERS",
    "MODELS",
    "OPTIMIZERS",
    "build_model",
    "check_optimizer_names",
    "make_optimizer",
    "optimizer_settings",
    "plot_curves",
    "run_comparison",
    "run_layer_comparison",
]

# Aim for about this many test evaluations per run.
CURVE_POINTS = 20
# `--tune`: factors of each optimizer's default learning rate.
TUNE_GRID = (0.3, 1.0, 3.0)
# `--tune`: the share of the training set held out for validation.
VALIDATION_FRACTION = 0.2
DEFAULT_BATCH_SIZES = (8, 256)
# Epochs of the layers mode per dataset: a micro-batch makes many steps.
LAYER_EPOCHS = {"digits": 10, "fashion_mnist": 2, "mnist_5k": 5}


def check_optimizer_names(names):
    """Raises a `ValueError` listing the valid names if one is unknown."""
    catalog.check_names(names, OPTIMIZERS, "optimizer")


def check_output_dir(path):
    """Creates `path` if needed and checks that files can be written there.

    Raises:
        ValueError: naming the folder and the reason when it cannot be
            created or written.
    """
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        reason = e.strerror or str(e)
        raise ValueError(
            f"Cannot write the results to --output-dir {path!r}: {reason}"
        ) from None


class Job:
    """The data and settings that every run of a job shares.

    Attributes:
        ds: the `data.Dataset`.
        config: the dict reported as `"config"` (epochs, target, seeds...).
        seeds: the list of seeds.
    """

    def __init__(self, ds, config, seeds):
        self.ds = ds
        self.config = config
        self.seeds = seeds

    @classmethod
    def load(cls, dataset, test_size, seed, seeds, **config):
        """Loads the data; fills the dataset's defaults into `config`."""
        name = data.resolve_name(dataset)
        defaults = data.DEFAULTS[name]
        for key in ("epochs", "train_size", "target_accuracy", "batch_size"):
            if key in config and config[key] is None:
                config[key] = defaults[key]
        ds = data.load_dataset(name, config.pop("train_size"), test_size, seed)
        if seeds < 1:
            raise ValueError(f"Expected seeds >= 1, got {seeds}.")
        config["seeds"] = list(range(seed, seed + seeds))
        return cls(ds, config, config["seeds"])

    def steps_per_epoch(self, batch_size, ds=None):
        return math.ceil(len((ds or self.ds).y_train) / batch_size)

    def evals_per_epoch(self, batch_size):
        wanted = self.config.get("evals_per_epoch")
        if wanted is None:
            wanted = max(1, round(CURVE_POINTS / self.config["epochs"]))
        return min(wanted, self.steps_per_epoch(batch_size))


def run_comparison(
    optimizers=DEFAULT_OPTIMIZERS,
    dataset="auto",
    model="mlp",
    epochs=None,
    batch_size=None,
    train_size=None,
    test_size=None,
    target_accuracy=None,
    learning_rates=None,
    evals_per_epoch=None,
    seed=0,
    seeds=3,
    tune=False,
    tune_grid=TUNE_GRID,
    baseline="adam",
    output_dir="compare_output",
    verbose=1,
):
    """Trains `model` on `dataset` with each optimizer, `seeds` times.

    Each optimizer trains once per seed; the report gives, per optimizer,
    the mean and standard deviation over seeds of the final test accuracy
    and loss, a 95% t interval of the mean accuracy, and Welch's two-sided
    t-test of each optimizer against `baseline` (significant at p < 0.05).
    With `tune=True` each optimizer first trains once (first seed) at
    every learning rate of `tune_grid` on 80% of the training set, and the
    final runs use the rate with the best accuracy on the other 20%; the
    test split plays no part in the choice.

    Args:
        optimizers: names from `OPTIMIZERS`.
        dataset: a name from `data.DATASETS`.
        model: a name from `MODELS` (`"cnn"` has no normalization layer,
            `"transformer"` uses LayerNormalization).
        epochs, batch_size, train_size, target_accuracy: `None` for the
            dataset's default in `data.DEFAULTS`.
        test_size: `None` (whole test split) or a number of test examples.
        learning_rates: dict of optimizer name -> learning rate, overriding
            the defaults (and centring the tuning grid).
        evals_per_epoch: `None` (about `CURVE_POINTS` over the run) or an
            integer >= 1.
        seed: the first seed; the data split and subsets use it too.
        seeds: the number of seeds, an integer >= 1.
        tune: whether to tune the learning rates first.
        tune_grid: factors of each optimizer's learning rate to try.
        baseline: the optimizer the others are tested against, or
            `"best"` (the highest mean test accuracy). When it is not in
            `optimizers` the best is used.
        output_dir: folder for the result files; created if needed.
        verbose: 0 (silent), 1 (header, progress bars and table).

    Returns:
        The results as a dict, the same content as `results.json`.
    """
    optimizers = list(optimizers)
    learning_rates = dict(learning_rates or {})
    check_optimizer_names(optimizers + list(learning_rates))
    _check_model(model)
    tune_grid = _check_grid(tune_grid)
    check_output_dir(output_dir)
    layer = "layer_norm" if model == "transformer" else "none"
    job = Job.load(
        dataset,
        test_size,
        seed,
        seeds,
        epochs=epochs,
        train_size=train_size,
        target_accuracy=target_accuracy,
        evals_per_epoch=evals_per_epoch,
        model=model,
        batch_size=batch_size,
    )
    entries = [
        _entry(name, name, None, job.config["batch_size"], name, layer)
        for name in optimizers
    ]
    report = _new_report("optimizers", job, model, layer, entries[0])
    report["config"]["baseline"] = _baseline(baseline, optimizers)
    if verbose:
        print(reporting.format_header(report))
    for entry in entries:
        entry["learning_rate"] = learning_rates.get(
            entry["optimizer"],
            optimizer_settings(entry["optimizer"])["learning_rate"],
        )
    if tune:
        report["config"]["tuning"] = _tune(job, entries, tune_grid, verbose)
    _train_entries(job, entries, report, verbose, same_weights=True)
    return _finish(report, output_dir, verbose)


def run_layer_comparison(
    layers=None,
    model="cnn",
    batch_sizes=DEFAULT_BATCH_SIZES,
    optimizer="adam",
    learning_rate=None,
    dataset="auto",
    epochs=None,
    train_size=None,
    test_size=None,
    target_accuracy=None,
    evals_per_epoch=None,
    seed=0,
    seeds=3,
    baseline=None,
    output_dir="compare_output",
    verbose=1,
):
    """Trains `model` with each normalization layer at each batch size.

    The layers of `catalog.LAYERS` go where the model normalizes (after
    each convolution of the CNN; before attention, before the MLP and at
    the end of the transformer). Every layer and batch size trains once
    per seed with the same optimizer and learning rate; within each batch
    size, each layer is tested against `baseline` as in `run_comparison`.

    Args:
        layers: names from `catalog.layers_for(model)`; `None` for
            `catalog.DEFAULT_LAYERS[model]`.
        model: `"cnn"` or `"transformer"`.
        batch_sizes: the batch sizes, e.g. a micro-batch and a large one.
        optimizer: a name from `OPTIMIZERS`.
        learning_rate: `None` for the optimizer's default, or a float.
        baseline: the layer the others are tested against, or `"best"`;
            `None` for `catalog.BASELINE_LAYER[model]` (the best when it is
            not in `layers`).
        dataset, epochs, train_size, test_size, target_accuracy,
        evals_per_epoch, seed, seeds, output_dir, verbose: as in
            `run_comparison`.

    Returns:
        The results as a dict, the same content as `results.json`.
    """
    if model not in catalog.DEFAULT_LAYERS:
        raise ValueError(
            f"Unknown model {model!r} for layers. Expected one of: "
            f"{', '.join(catalog.DEFAULT_LAYERS)}"
        )
    layers = list(layers or catalog.DEFAULT_LAYERS[model])
    catalog.check_layer_names(layers, model)
    check_optimizer_names([optimizer])
    check_output_dir(output_dir)
    job = Job.load(
        dataset,
        test_size,
        seed,
        seeds,
        epochs=epochs,
        train_size=train_size,
        target_accuracy=target_accuracy,
        evals_per_epoch=evals_per_epoch,
        model=model,
        batch_sizes=list(batch_sizes),
        optimizer=optimizer,
    )
    rate = learning_rate or optimizer_settings(optimizer)["learning_rate"]
    entries = []
    for size in batch_sizes:
        for layer in layers:
            entries.append(
                _entry(layer, optimizer, f"batch {size}", size, layer, layer)
            )
            entries[-1]["learning_rate"] = rate
    report = _new_report("layers", job, model, None, entries[0])
    default = catalog.BASELINE_LAYER[model]
    report["config"]["baseline"] = _baseline(baseline or default, layers)
    if verbose:
        print(reporting.format_header(report))
    _train_entries(job, entries, report, verbose, same_weights=False)
    return _finish(report, output_dir, verbose)


def _check_model(model):
    if model not in MODELS:
        raise ValueError(
            f"Unknown model {model!r}. Expected one of: {', '.join(MODELS)}"
        )


def _check_grid(grid):
    grid = [float(g) for g in grid]
    if not grid or not all(g > 0 and math.isfinite(g) for g in grid):
        raise ValueError(
            f"Expected tune_grid to hold at least one factor > 0, got {grid}."
        )
    return grid


def _baseline(name, names):
    return name if name in names else "best"


def _entry(name, optimizer, group, batch_size, label, layer):
    return dict(
        name=label,
        optimizer=optimizer,
        group=group,
        batch_size=batch_size,
        layer=layer,
        key=name,
    )


def _new_report(mode, job, model, layer, first):
    ds = job.ds
    context = catalog.LayerContext(first["batch_size"], 1000)
    net = build_model(
        model, ds.image_shape, ds.num_classes, first["layer"], context
    )
    config = dict(job.config)
    config.update(model=model, parameters=net.count_params())
    if layer is not None:
        config["layer"] = layer
    return {
        "mode": mode,
        "versions": reporting.environment(),
        "dataset": {
            "name": ds.name,
            "source": ds.source,
            "train_size": len(ds.y_train),
            "test_size": len(ds.y_test),
            "image_shape": list(ds.image_shape),
            "num_classes": ds.num_classes,
        },
        "config": config,
        "results": [],
    }


def _tune(job, entries, grid, verbose):
    """Picks each entry's learning rate on a validation split, in place."""
    ds = job.ds
    train, val = data.stratified_split(
        ds.y_train, VALIDATION_FRACTION, job.seeds[0]
    )
    split = data.Dataset(
        ds.name,
        ds.x_train[train],
        ds.y_train[train],
        ds.x_train[val],
        ds.y_train[val],
        ds.source,
    )
    summary = {
        "grid_factors": grid,
        "validation_fraction": VALIDATION_FRACTION,
        "train_size": len(train),
        "validation_size": len(val),
        "seed": job.seeds[0],
        "selected_by": "final validation accuracy (ties: lower loss)",
    }
    for i, entry in enumerate(entries):
        trials = []
        for factor in grid:
            # 12 digits: 0.15 * 3 is 0.45, not 0.44999999999999996.
            rate = float(f"{entry['learning_rate'] * factor:.12g}")
            if verbose:
                print(
                    f"\n[tune {i + 1}/{len(entries)}] {entry['name']} at "
                    f"learning_rate={rate:g} (validation split)"
                )
            run = _train_run(
                job, entry, rate, job.seeds[0], split, evals_per_epoch=1
            )
            trials.append(
                dict(
                    learning_rate=rate,
                    validation_accuracy=run["test_accuracy"],
                    validation_loss=run["test_loss"],
                )
            )
        best = max(trials, key=_trial_score)
        entry["tuning"] = dict(trials=trials, chosen=best["learning_rate"])
        entry["learning_rate"] = best["learning_rate"]
    return summary


def _trial_score(trial):
    loss = trial["validation_loss"]
    if not math.isfinite(loss):
        return (-1.0, 0.0)
    return (trial["validation_accuracy"], -loss)


def _train_entries(job, entries, report, verbose, same_weights):
    initial = {}
    total = len(entries) * len(job.seeds)
    count = 0
    for entry in entries:
        runs = []
        for seed in job.seeds:
            count += 1
            if verbose:
                settings = _settings(entry, entry["learning_rate"])
                where = f" ({entry['group']})" if entry["group"] else ""
                print(
                    f"\n[{count}/{total}] {entry['name']}{where}, seed "
                    f"{seed} ({reporting.describe(settings)})"
                )
            weights = None
            if same_weights:
                if seed not in initial:
                    initial[seed] = _build(job, entry, seed).get_weights()
                weights = initial[seed]
            runs.append(
                _train_run(
                    job,
                    entry,
                    entry["learning_rate"],
                    seed,
                    weights=weights,
                    verbose=verbose,
                )
            )
        report["results"].append(_result(job, entry, runs))
    reporting.add_significance(report)


def _settings(entry, learning_rate):
    return optimizer_settings(entry["optimizer"], learning_rate)


def _build(job, entry, seed, ds=None):
    ds = ds or job.ds
    keras.utils.set_random_seed(seed)
    steps = job.config["epochs"] * job.steps_per_epoch(entry["batch_size"], ds)
    context = catalog.LayerContext(entry["batch_size"], steps)
    return build_model(
        job.config["model"],
        ds.image_shape,
        ds.num_classes,
        entry["layer"],
        context,
    )


def _train_run(
    job,
    entry,
    learning_rate,
    seed,
    ds=None,
    weights=None,
    evals_per_epoch=None,
    verbose=0,
):
    """Trains one model; returns its final metrics and curves."""
    ds = ds or job.ds
    net = _build(job, entry, seed, ds)
    if weights is not None:
        net.set_weights(weights)
    name = entry["optimizer"]
    if OPTIMIZERS[name].needs_hessian:
        enable_hessian_training(net)
    net.compile(
        optimizer=make_optimizer(name, learning_rate, seed=seed),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    evals = evals_per_epoch or job.evals_per_epoch(entry["batch_size"])
    curves, step_times = _train(
        net, ds, job.config["epochs"], entry["batch_size"], evals, seed, verbose
    )
    target = job.config["target_accuracy"]
    reached = [
        s
        for s, a in zip(curves["step"], curves["test_accuracy"])
        if a >= target
    ]
    return {
        "seed": seed,
        "test_loss": curves["test_loss"][-1],
        "test_accuracy": curves["test_accuracy"][-1],
        "steps_to_target": reached[0] if reached else None,
        "ms_per_step": (
            1000 * float(np.median(step_times)) if step_times else None
        ),
        "timed_steps": len(step_times),
        "curves": curves,
    }


def _result(job, entry, runs):
    result = {
        "name": entry["name"],
        "optimizer": entry["optimizer"],
        "layer": entry["layer"],
        "group": entry["group"],
        "batch_size": entry["batch_size"],
        "learning_rate": entry["learning_rate"],
        "settings": reporting.describe(
            _settings(entry, entry["learning_rate"])
        ),
    }
    if entry["layer"] in catalog.LAYERS:
        result["layer_setup"] = catalog.LAYERS[entry["layer"]].description
    if "tuning" in entry:
        result["tuning"] = entry["tuning"]
    result.update(reporting.summarize_runs(runs))
    result["runs"] = runs
    return result


def _finish(report, output_dir, verbose):
    os.makedirs(output_dir, exist_ok=True)
    table = reporting.format_table(report)
    paths = [
        reporting.write_json(report, os.path.join(output_dir, "results.json")),
        reporting.write_csv(report, os.path.join(output_dir, "results.csv")),
    ]
    with open(os.path.join(output_dir, "table.txt"), "w") as f:
        f.write(table + "\n")
    paths.append(os.path.join(output_dir, "table.txt"))
    png = plot_curves(report, os.path.join(output_dir, "curves.png"))
    if verbose:
        print("\n" + table)
        for path in paths + ([png] if png else []):
            print(f"Wrote {path}")
        if not png:
            print(
                "Skipped curves.png: matplotlib is not installed "
                "(`pip install matplotlib` adds it)."
            )
    return report


class _StepRecorder(keras.callbacks.Callback):
    """Times training steps and forwards the running loss to a progress bar.

    A step is timed from the start of its batch to the end of it. Reading
    the loss at the end makes every backend finish the step first.
    """

    def __init__(self):
        super().__init__()
        self.durations = []
        self.timing = False
        self.progbar = None
        self.offset = 0
        self._start = None

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        loss = float(logs["loss"])
        if self.timing:
            self.durations.append(time.perf_counter() - self._start)
        if self.progbar is not None:
            self.progbar.update(
                self.offset + batch + 1, [("loss", loss)], finalize=False
            )


def _progbar(target):
    # One bar per run; when the output is not a terminal (a log file, a
    # pipe), a line every 10 seconds rather than one per step.
    interval = 0.05 if sys.stdout.isatty() else 10.0
    return keras.utils.Progbar(
        target,
        interval=interval,
        stateful_metrics=["loss", "test_acc", "epoch"],
    )


def _train(net, ds, epochs, batch_size, evals_per_epoch, seed, verbose):
    """Runs the training loop; returns the curves and timed step lengths."""
    n = len(ds.y_train)
    x_train = _model_inputs(net, ds.x_train)
    x_test = _model_inputs(net, ds.x_test)
    steps_per_epoch = math.ceil(n / batch_size)
    # Chunk boundaries in steps, so that every chunk but the epoch's last
    # holds whole batches and the model sees at most two batch shapes.
    bounds = np.linspace(0, steps_per_epoch, evals_per_epoch + 1)
    bounds = [int(b) for b in np.round(bounds)]
    order_rng = np.random.default_rng(seed)
    recorder = _StepRecorder()
    if verbose:
        recorder.progbar = _progbar(epochs * steps_per_epoch)

    def evaluate():
        loss, acc = net.evaluate(x_test, ds.y_test, batch_size=1024, verbose=0)
        return float(loss), float(acc)

    test_loss, test_acc = evaluate()
    curves = {
        "step": [0],
        "epoch": [0.0],
        "train_loss": [None],
        "test_loss": [test_loss],
        "test_accuracy": [test_acc],
    }
    step = 0
    for epoch in range(epochs):
        order = order_rng.permutation(n)
        for chunk, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
            # Steps of the first epoch include compilation: time them only
            # when there is no later epoch, and then skip the first chunk.
            recorder.timing = epoch > 0 or (epochs == 1 and chunk > 0)
            recorder.offset = epoch * steps_per_epoch + start
            idx = order[start * batch_size : stop * batch_size]
            history = net.fit(
                x_train[idx],
                ds.y_train[idx],
                batch_size=batch_size,
                epochs=1,
                shuffle=False,
                verbose=0,
                callbacks=[recorder],
            )
            step += stop - start
            test_loss, test_acc = evaluate()
            curves["step"].append(step)
            curves["epoch"].append(step / steps_per_epoch)
            curves["train_loss"].append(float(history.history["loss"][-1]))
            curves["test_loss"].append(test_loss)
            curves["test_accuracy"].append(test_acc)
            if recorder.progbar is not None:
                recorder.progbar.update(
                    step,
                    [
                        ("epoch", epoch + 1),
                        ("loss", curves["train_loss"][-1]),
                        ("test_acc", test_acc),
                    ],
                    finalize=step == epochs * steps_per_epoch,
                )
    return curves, recorder.durations


def _model_inputs(net, x):
    """Adds the channel axis when the model wants one."""
    if len(net.inputs[0].shape) == x.ndim + 1:
        axis = 1 if keras.config.image_data_format() == "channels_first" else -1
        return np.expand_dims(x, axis)
    return x
