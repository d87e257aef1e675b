"""No traced TensorFlow graph outlives a `fit` with the package's generic
update. Collected on the tensorflow backend only.

Keras's TensorFlow update all-reduces the gradients also without a
strategy; that `tf.custom_gradient` registers a gradient function in
TensorFlow's global registry that holds the traced training step, so
every model trained in the process stayed in memory. `BatchOptimizer`
skips it without a strategy.
"""

import gc

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_batchopt

# The generic update by default (no TensorFlow fast path), the generic
# update of a fast-path optimizer, and the Hessian training step.
CASES = {
    "lars": (lambda: keras_batchopt.optimizers.Lars(0.01), True),
    "adan_fast_paths_off": (
        lambda: keras_batchopt.optimizers.Adan(1e-3),
        False,
    ),
    "ada_hessian": (lambda: keras_batchopt.optimizers.AdaHessian(0.01), True),
}


def live_graphs():
    """The number of `tf.Graph`s alive (traced steps are `FuncGraph`s)."""
    tf.compat.v1.get_default_graph()  # The global graph, made once, lazily.
    gc.collect()
    return sum(isinstance(o, tf.Graph) for o in gc.get_objects())


def fit_and_forget(make_optimizer, fast_paths):
    rng = np.random.RandomState(0)
    x = rng.randn(32, 4).astype("float32")
    y = rng.randint(0, 3, size=32)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(3)]
    )
    optimizer = make_optimizer()
    if isinstance(optimizer, keras_batchopt.optimizers.AdaHessian):
        keras_batchopt.curvature.enable_hessian_training(model)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    with keras_batchopt.config.fast_paths(fast_paths):
        model.fit(x, y, batch_size=16, verbose=0)


@pytest.mark.parametrize("name", CASES)
def test_no_traced_graph_outlives_a_fit(name):
    graphs = live_graphs()
    fit_and_forget(*CASES[name])
    assert live_graphs() == graphs, "a traced graph outlives the fit"
