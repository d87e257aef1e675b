"""The models of the cross-backend checkpoint test: every optimizer of
the package, and every layer that keeps state (moving statistics, or
state its backward pass sets), each in a small trained model.

Both sides of the test build from here: `test_cross_backend.py` trains
and saves on its own backend, and `worker.py`, in a fresh process on
another backend, loads, records and continues.
"""

import keras
import numpy as np

from keras_batchopt import curvature
from keras_batchopt import layers
from keras_batchopt import optimizers

IMAGE = (4, 4, 8)
SEQUENCE = (5, 8)
BATCH = 8
# Steps of `fit` before the save, and after it (the same on both sides).
STEPS_BEFORE = 3
STEPS_AFTER = 1

# name -> (optimizer factory, input kind, stateful layer factories).
# AdaHessian refreshes its Hessian on even iterations only
# (`hessian_update_interval=2`): the step after the save (iteration 3)
# re-uses the saved Hessian average. Its Rademacher probes are a
# deterministic function of (seed, step) on each backend, but each
# backend's random generator draws different ones, so a step that draws
# a fresh probe is not comparable across backends.
CASES = {
    "adan": (
        lambda: optimizers.Adan(0.01, weight_decay=0.05, max_grad_norm=5.0),
        "image",
        [
            lambda: layers.GhostBatchNormalization(4),
            lambda: layers.AlphaBatchNormalization(alpha=0.3),
        ],
    ),
    "lamb": (
        lambda: optimizers.Lamb(0.01, weight_decay=0.05),
        "image",
        [lambda: layers.BatchChannelNormalization(4)],
    ),
    "lars": (
        lambda: optimizers.Lars(0.1, weight_decay=0.05, nesterov=True),
        "image",
        [lambda: layers.InstanceBatchNormalization()],
    ),
    "ada_hessian": (
        lambda: optimizers.AdaHessian(
            0.05, weight_decay=0.05, hessian_update_interval=2, seed=3
        ),
        "image",
        [
            lambda: layers.GhostBatchNormalization(
                4, moving_statistics="sequential"
            )
        ],
    ),
    "sgd_sai": (
        lambda: optimizers.SGDSaI(0.01, weight_decay=0.05),
        "sequence",
        [lambda: layers.RepBatchNormalization()],
    ),
    "sink_gd": (
        lambda: optimizers.SinkGD(0.01, weight_decay=0.05),
        "sequence",
        [
            lambda: layers.PowerNormalization(warmup_steps=1, groups=2),
            lambda: layers.ProgressiveRepBN(total_steps=10, warmup_steps=1),
        ],
    ),
    "adagrad_norm": (
        lambda: optimizers.AdaGradNorm(
            0.05, weight_decay=0.05, accumulator="coordinate"
        ),
        "sequence",
        [
            lambda: layers.UnifiedNormalization(
                window_size=(3, 2), warmup_steps=2, outlier_filtration=True
            )
        ],
    ),
}


def build_model(name):
    """The compiled, untrained model of case `name` (seeded)."""
    make_optimizer, kind, stateful = CASES[name]
    keras.utils.set_random_seed(0)
    inputs = keras.Input(IMAGE if kind == "image" else SEQUENCE)
    x = inputs
    for make_layer in stateful:
        # A nonlinear layer before each normalization: a shift (a `beta`)
        # followed by another normalization would get a gradient of
        # rounding noise only, which a step normalized per coordinate
        # (Adan's) turns into a different step on each backend.
        x = keras.layers.Dense(8, activation="tanh")(x)
        x = make_layer()(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    model.compile(
        optimizer=make_optimizer(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return wire(model)


def wire(model):
    """AdaHessian's models need the Hessian step (it is not saved)."""
    if isinstance(model.optimizer, optimizers.AdaHessian):
        curvature.enable_hessian_training(model)
    return model


def data(name):
    """Inputs and labels: the batches before the save, then after it."""
    kind = CASES[name][1]
    shape = IMAGE if kind == "image" else SEQUENCE
    n = BATCH * (STEPS_BEFORE + STEPS_AFTER)
    rng = np.random.default_rng(len(name))
    x = rng.normal(0.5, 1.5, (n,) + shape).astype("float32")
    y = rng.integers(0, 3, n)
    split = BATCH * STEPS_BEFORE
    return (x[:split], y[:split]), (x[split:], y[split:])


def fit(model, x, y):
    model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0)


def state(model):
    """Every model variable, then every optimizer variable, as NumPy, with
    their dtypes."""
    variables = list(model.weights) + list(model.optimizer.variables)
    return {
        "values": [np.array(keras.ops.convert_to_numpy(v)) for v in variables],
        "dtypes": [str(v.dtype) for v in variables],
        "paths": [v.path for v in variables],
        "model_count": len(model.weights),
    }
