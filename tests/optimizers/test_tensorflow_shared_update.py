"""The TensorFlow fast path compiles one update per distinct update, not
one per optimizer: TensorFlow never frees a compiled XLA program, so a
learning-rate sweep used to grow by one program per model. Sharing must
never change a number. Collected on the tensorflow backend only.
"""

import gc
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_batchopt
from keras_batchopt.src.backend.tensorflow.optimizers import xla_update
from tests.conftest import to_numpy


def make_model(names=("first", "second")):
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(8, activation="tanh", name=names[0]),
            keras.layers.Dense(8, name=names[1]),
        ]
    )


def fit(make_optimizer, fast=True, names=("first", "second")):
    rng = np.random.RandomState(0)
    x = rng.randn(64, 8).astype("float32")
    y = rng.randint(0, 8, size=64)
    model = make_model(names)
    model.compile(
        optimizer=make_optimizer(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    with keras_batchopt.config.fast_paths(fast):
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    state = [to_numpy(v) for v in model.optimizer.variables]
    return model, model.get_weights() + state


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def adan(learning_rate):
    return lambda: keras_batchopt.optimizers.Adan(
        learning_rate, weight_decay=0.02
    )


def test_a_learning_rate_sweep_compiles_one_update():
    shared = len(xla_update._SHARED)
    fit(adan(1e-3))
    assert len(xla_update._SHARED) == shared + 1
    function = next(reversed(xla_update._SHARED.values()))
    _, second = fit(adan(3e-3))
    assert len(xla_update._SHARED) == shared + 1
    assert function.experimental_get_tracing_count() == 1
    # The second optimizer's numbers ran through the first one's program.
    _, generic = fit(adan(3e-3), fast=False)
    assert_same(second, generic)


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: keras_batchopt.optimizers.Lamb(
            1e-2, weight_decay=0.5, exclude_from_layer_adaptation=["tail"]
        ),
        lambda: keras_batchopt.optimizers.SinkGD(1e-2, exclude_layers=["tail"]),
    ],
    ids=["layer_adaptation", "sinkgd_routing"],
)
def test_updates_that_route_variables_differently_are_not_shared(
    make_optimizer,
):
    """Same class, configuration and shapes; the exclusion, searched in
    variable paths, matches the first layer of one model and the second
    layer of the other."""
    shared = len(xla_update._SHARED)
    _, first = fit(make_optimizer, names=("tail", "head"))
    _, second = fit(make_optimizer, names=("head", "tail"))
    assert_same(first, fit(make_optimizer, False, ("tail", "head"))[1])
    assert_same(second, fit(make_optimizer, False, ("head", "tail"))[1])
    assert len(xla_update._SHARED) == shared + 2


class ReadsAnExtraVariable(keras_batchopt.optimizers.AdaGradNorm):
    """An update that reads a variable the optimizer does not own."""

    def __init__(self, extra, **kwargs):
        super().__init__(**kwargs)
        self.extra = extra

    def update_step(self, gradient, variable, learning_rate):
        super().update_step(gradient, variable, learning_rate * self.extra)


# Posing as a class of the package: the capture check must catch it.
ReadsAnExtraVariable.__module__ = "keras_batchopt.src.optimizers.fake"


def test_an_update_that_captures_state_gets_its_own_function():
    extras = [tf.Variable(1.0), tf.Variable(0.0)]
    shared = len(xla_update._SHARED)
    runs = [
        fit(lambda: ReadsAnExtraVariable(e, learning_rate=0.1)) for e in extras
    ]
    assert len(xla_update._SHARED) == shared
    for run in runs:
        assert run[0].optimizer in xla_update._PRIVATE
    # Had the second optimizer run the first one's program, it would have
    # trained with the first one's factor (1.0 instead of 0.0).
    initial = make_model().get_weights()
    assert_same(runs[1][1][: len(initial)], initial)
    assert not np.allclose(runs[0][1][0], initial[0])


class DefinedOutside(keras_batchopt.optimizers.Adan):
    pass


def test_a_subclass_defined_outside_the_package_is_not_shared():
    shared = len(xla_update._SHARED)
    model, _ = fit(lambda: DefinedOutside(1e-3))
    assert len(xla_update._SHARED) == shared
    assert model.optimizer in xla_update._PRIVATE


def test_the_shared_update_keeps_no_optimizer_or_model_alive():
    model, _ = fit(adan(2e-3))
    references = [weakref.ref(model), weakref.ref(model.optimizer)]
    references += [weakref.ref(v.value) for v in model.optimizer.variables]
    del model
    gc.collect()
    assert all(r() is None for r in references)
    # And the shared program still serves the next optimizer.
    _, after = fit(adan(2e-3))
    assert_same(after, fit(adan(2e-3), fast=False)[1])
