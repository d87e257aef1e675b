"""The TensorFlow fast path (the update compiled by XLA inside graph-mode
steps) equals the generic update. Collected on the tensorflow backend only.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_batchopt
from keras_batchopt.src.backend import dispatch
from tests.conftest import spy_on
from tests.conftest import to_numpy
from tests.optimizers.contract_cases import CASES

NAME = "optimizers.xla_update"
MODULE = dispatch.module_path(NAME, "tensorflow")
FAST_CASES = [
    c
    for c in CASES
    if getattr(c.cls, "_fast_path_modules", {}).get("tensorflow") == NAME
]


def fit(case, fast):
    rng = np.random.RandomState(0)
    x = rng.randn(96, 4).astype("float32")
    y = rng.randint(0, 3, size=96)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(3),
        ]
    )
    model.compile(
        optimizer=case.make(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    with keras_batchopt.config.fast_paths(fast):
        model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    weights = model.get_weights()
    state = [to_numpy(v) for v in model.optimizer.variables]
    return weights + state


@pytest.mark.parametrize("case", FAST_CASES, ids=str)
def test_graph_mode_fit_fast_path_equals_generic(case, monkeypatch):
    calls = spy_on(MODULE, "update_step", monkeypatch)
    fast = fit(case, True)
    assert calls, "the fast path did not run"
    count = len(calls)
    generic = fit(case, False)
    assert len(calls) == count, "the fast path ran while disabled"
    for a, b in zip(fast, generic):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", FAST_CASES, ids=str)
def test_fast_path_is_not_used_eagerly_or_under_a_strategy(case, monkeypatch):
    calls = spy_on(MODULE, "update_step", monkeypatch)
    variables = [keras.Variable(np.ones((3, 2), "float32"))]
    optimizer = case.make()
    optimizer.apply([tf.ones((3, 2))], variables)  # eager
    module = dispatch.backend_module(NAME)
    grads = [tf.ones((3, 2))]

    @tf.function
    def usable():
        return module.can_use(optimizer, grads, variables)

    assert usable()  # in a graph, without a strategy
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        assert not tf.function(
            lambda: module.can_use(optimizer, grads, variables)
        )()
    assert not calls
