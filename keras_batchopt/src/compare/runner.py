"""Trains one small model per optimizer and reports how they compare.

The public entry point is `run_comparison()`; the command line in `cli.py`
is a thin layer over it. Only Keras and NumPy are imported here; matplotlib
is imported inside `report.plot_curves()` and is optional.
"""

import math
import os
import time

import keras
import numpy as np

from keras_batchopt import optimizers as batchopt_optimizers
from keras_batchopt.src.compare import data
from keras_batchopt.src.compare.report import environment
from keras_batchopt.src.compare.report import format_header
from keras_batchopt.src.compare.report import format_table
from keras_batchopt.src.compare.report import plot_curves
from keras_batchopt.src.compare.report import write_csv
from keras_batchopt.src.compare.report import write_json

# The one table of optimizers the job knows: name -> (constructor, default
# arguments). A new optimizer of the package joins the job with one entry.
# Learning rates are light per-optimizer defaults for these small models:
# Adan tolerates 5-10x AdamW's rate, Lion wants a 3-10x smaller one.
OPTIMIZERS = {
    "adan": (
        batchopt_optimizers.Adan,
        dict(learning_rate=5e-3, weight_decay=0.02),
    ),
    "adam": (keras.optimizers.Adam, dict(learning_rate=1e-3)),
    "adamw": (
        keras.optimizers.AdamW,
        dict(learning_rate=1e-3, weight_decay=0.05),
    ),
    "sgd": (keras.optimizers.SGD, dict(learning_rate=0.05, momentum=0.9)),
    "lamb": (keras.optimizers.Lamb, dict(learning_rate=5e-3)),
    "lion": (
        keras.optimizers.Lion,
        dict(learning_rate=2e-4, weight_decay=0.5),
    ),
}
DEFAULT_OPTIMIZERS = ("adan", "adamw", "adam")
MODELS = ("mlp", "cnn")
# Aim for about this many test evaluations per optimizer.
CURVE_POINTS = 20


def make_optimizer(name, learning_rate=None):
    """Returns a new optimizer from `OPTIMIZERS`, with its default arguments.

    Args:
        name: a key of `OPTIMIZERS`.
        learning_rate: `None` (the default for `name`) or a float.
    """
    check_optimizer_names([name])
    return OPTIMIZERS[name][0](**optimizer_settings(name, learning_rate))


def check_optimizer_names(names):
    """Raises a `ValueError` listing the valid names if one is unknown."""
    unknown = [name for name in names if name not in OPTIMIZERS]
    if unknown:
        raise ValueError(
            f"Unknown optimizer {unknown[0]!r}. Expected one of: "
            f"{', '.join(OPTIMIZERS)}"
        )


def optimizer_settings(name, learning_rate=None):
    """Returns the constructor arguments `make_optimizer()` uses."""
    settings = dict(OPTIMIZERS[name][1])
    if learning_rate is not None:
        settings["learning_rate"] = learning_rate
    return settings


def build_model(kind, image_shape, num_classes):
    """Builds the small classifier that every optimizer trains.

    Args:
        kind: `"mlp"` (two hidden layers) or `"cnn"` (two convolutions).
        image_shape: `(height, width)` of the grayscale inputs.
        num_classes: the number of output classes.
    """
    layers = keras.layers
    if kind == "mlp":
        hidden = [
            layers.Flatten(),
            layers.Dense(256, activation="relu"),
            layers.Dense(128, activation="relu"),
        ]
        input_shape = tuple(image_shape)
    elif kind == "cnn":
        hidden = [
            layers.Conv2D(16, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
        ]
        input_shape = _image_input_shape(image_shape)
    else:
        raise ValueError(
            f"Unknown model {kind!r}. Expected one of: {', '.join(MODELS)}"
        )
    return keras.Sequential(
        [keras.Input(input_shape), *hidden, layers.Dense(num_classes)],
        name=f"compare_{kind}",
    )


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
    output_dir="compare_output",
    verbose=1,
):
    """Trains `model` on `dataset` once per optimizer and reports.

    Every optimizer starts from the same initial weights and sees the same
    batches in the same order. The test split is evaluated
    `evals_per_epoch` times per epoch. The function prints a header, a
    progress bar per epoch and a table, and writes `results.json`,
    `results.csv` and `curves.png` (when matplotlib is installed) to
    `output_dir`.

    Args:
        optimizers: names from `OPTIMIZERS`.
        dataset: a name from `data.DATASETS`.
        model: `"mlp"` or `"cnn"`.
        epochs, batch_size, train_size, target_accuracy: `None` for the
            dataset's default in `data.DEFAULTS`.
        test_size: `None` (whole test split) or a number of test examples.
        learning_rates: dict of optimizer name -> learning rate overriding
            the defaults in `OPTIMIZERS`.
        evals_per_epoch: `None` (about `CURVE_POINTS` over the run) or an
            integer >= 1.
        seed: seed of the data split, the initial weights and batch order.
        output_dir: folder for the result files; created if needed.
        verbose: 0 (silent), 1 (header, progress bars and table).

    Returns:
        The results as a dict, the same content as `results.json`.
    """
    optimizers = list(optimizers)
    learning_rates = dict(learning_rates or {})
    check_optimizer_names(optimizers + list(learning_rates))
    if model not in MODELS:
        raise ValueError(
            f"Unknown model {model!r}. Expected one of: {', '.join(MODELS)}"
        )

    dataset_name = data.resolve_name(dataset)
    defaults = data.DEFAULTS[dataset_name]
    epochs = epochs or defaults["epochs"]
    batch_size = batch_size or defaults["batch_size"]
    if train_size is None:
        train_size = defaults["train_size"]
    if target_accuracy is None:
        target_accuracy = defaults["target_accuracy"]
    ds = data.load_dataset(dataset_name, train_size, test_size, seed)
    steps_per_epoch = math.ceil(len(ds.y_train) / batch_size)
    if evals_per_epoch is None:
        evals_per_epoch = max(1, round(CURVE_POINTS / epochs))
    evals_per_epoch = min(evals_per_epoch, steps_per_epoch)

    keras.utils.set_random_seed(seed)
    initial_model = build_model(model, ds.image_shape, ds.num_classes)
    initial_weights = initial_model.get_weights()
    report = {
        "versions": environment(),
        "dataset": {
            "name": ds.name,
            "source": ds.source,
            "train_size": len(ds.y_train),
            "test_size": len(ds.y_test),
            "image_shape": list(ds.image_shape),
            "num_classes": ds.num_classes,
        },
        "config": {
            "model": model,
            "parameters": initial_model.count_params(),
            "epochs": epochs,
            "batch_size": batch_size,
            "steps_per_epoch": steps_per_epoch,
            "evals_per_epoch": evals_per_epoch,
            "target_accuracy": target_accuracy,
            "seed": seed,
        },
        "results": [],
    }
    if verbose:
        print(format_header(report))

    for i, name in enumerate(optimizers):
        settings = optimizer_settings(name, learning_rates.get(name))
        if verbose:
            print(
                f"\n[{i + 1}/{len(optimizers)}] Training with {name} "
                f"({_describe(settings)})"
            )
        keras.utils.set_random_seed(seed)
        net = build_model(model, ds.image_shape, ds.num_classes)
        net.set_weights(initial_weights)
        net.compile(
            optimizer=make_optimizer(name, settings["learning_rate"]),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        curves, step_times = _train(
            net, ds, epochs, batch_size, evals_per_epoch, seed, verbose
        )
        reached = [
            s
            for s, a in zip(curves["step"], curves["test_accuracy"])
            if a >= target_accuracy
        ]
        report["results"].append(
            {
                "optimizer": name,
                "settings": _describe(settings),
                "test_loss": curves["test_loss"][-1],
                "test_accuracy": curves["test_accuracy"][-1],
                "steps_to_target": reached[0] if reached else None,
                "ms_per_step": (
                    1000 * float(np.median(step_times)) if step_times else None
                ),
                "timed_steps": len(step_times),
                "curves": curves,
            }
        )

    os.makedirs(output_dir, exist_ok=True)
    table = format_table(report)
    write_json(report, os.path.join(output_dir, "results.json"))
    write_csv(report, os.path.join(output_dir, "results.csv"))
    png = plot_curves(report, os.path.join(output_dir, "curves.png"))
    if verbose:
        print("\n" + table)
        print(f"\nWrote {os.path.join(output_dir, 'results.json')}")
        print(f"Wrote {os.path.join(output_dir, 'results.csv')}")
        if png:
            print(f"Wrote {png}")
        else:
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
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs}")
            recorder.progbar = keras.utils.Progbar(
                steps_per_epoch, stateful_metrics=["loss", "test_acc"]
            )
        for chunk, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:])):
            # Steps of the first epoch include compilation: time them only
            # when there is no later epoch, and then skip the first chunk.
            recorder.timing = epoch > 0 or (epochs == 1 and chunk > 0)
            recorder.offset = start
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
                    stop,
                    [
                        ("loss", curves["train_loss"][-1]),
                        ("test_acc", test_acc),
                    ],
                    finalize=stop == steps_per_epoch,
                )
    return curves, recorder.durations


def _image_input_shape(image_shape):
    if keras.config.image_data_format() == "channels_first":
        return (1, *image_shape)
    return (*image_shape, 1)


def _model_inputs(net, x):
    """Adds the channel axis when the model wants one."""
    if len(net.inputs[0].shape) == x.ndim + 1:
        axis = 1 if keras.config.image_data_format() == "channels_first" else -1
        return np.expand_dims(x, axis)
    return x


def _describe(settings):
    return ", ".join(f"{k}={v:g}" for k, v in settings.items())
