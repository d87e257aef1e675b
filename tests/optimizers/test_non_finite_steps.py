"""Faults: under mixed precision, a step whose gradients hold NaN or Inf
is skipped by Keras's `LossScaleOptimizer` around every optimizer of the
package, and leaves every state tensor bit-identical: the optimizer's
(moments, Adan's previous gradient, SGD-SaI's gSNR, AdaHessian's Hessian
average, SinkGD's and AdaGradNorm's accumulators, the step counter) and
the state the layers' backward passes set (PowerNormalization's and
UnifiedNormalization's gradient statistics, ProgressiveRepBN's update
counter), under `mixed_float16` and `mixed_bfloat16`.

The labels of a poisoned batch are NaN or Inf: the forward pass (and so
the moving statistics, which Keras's own BatchNormalization also updates
on a skipped step) stays finite, every gradient and every backward-pass
state value does not. The first step is poisoned too: SGD-SaI then
computes its gSNR at the first finite step.
"""

import contextlib

import keras
import numpy as np
import pytest

import keras_batchopt
from keras_batchopt import layers
from tests.conftest import KERAS_VERSION
from tests.conftest import to_numpy
from tests.optimizers.contract_cases import CASES

# One case per optimizer class (the first one listed).
FIRST_CASES = list({case.cls: case for case in reversed(CASES)}.values())
N, C = 5, 8


def _model(case):
    inputs = keras.Input((N, C))
    x = keras.layers.Dense(C, activation="tanh")(inputs)
    if case.needs_hessian:
        x = layers.GhostBatchNormalization(2)(x)
    else:
        # The backward-pass state: custom backward passes, which the
        # Hessian step's second derivative does not go through.
        x = layers.PowerNormalization(warmup_steps=1, groups=2)(x)
        x = keras.layers.Dense(C, activation="tanh")(x)
        x = layers.UnifiedNormalization(window_size=(3, 2), warmup_steps=1)(x)
        x = layers.ProgressiveRepBN(total_steps=10, warmup_steps=1)(x)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    if case.needs_hessian:
        keras_batchopt.curvature.enable_hessian_training(model)
    return model


def _old_keras_warning(policy, case):
    """Before Keras 3.10 the backward-state layers warn under
    mixed_float16 (its LossScaleOptimizer divides their state); the
    Hessian step's model has none."""
    if (
        policy == "mixed_float16"
        and KERAS_VERSION < (3, 10)
        and not case.needs_hessian
    ):
        return pytest.warns(UserWarning, match="LossScaleOptimizer")
    return contextlib.nullcontext()


def _state(model):
    """The trainable variables (backward state included) and every
    variable of the inner optimizer, as NumPy arrays, by path."""
    inner = model.optimizer.inner_optimizer
    variables = list(model.trainable_variables) + list(inner.variables)
    return {v.path: to_numpy(v) for v in variables}


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("case", FIRST_CASES, ids=str)
def test_non_finite_step_keeps_every_state_tensor(case, policy):
    keras.mixed_precision.set_global_policy(policy)
    with _old_keras_warning(policy, case):
        model = _model(case)
    model.compile(
        # A moderate scale: Keras's default (2**15) overflows float16 on
        # the finite steps too, which then are skipped as well.
        optimizer=keras.optimizers.LossScaleOptimizer(
            case.make(), initial_scale=2.0**8
        ),
        loss="mse",
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 8, N, C)).astype("float32")
    y = rng.normal(size=(4, 8, 2)).astype("float32")
    y[0, 3, 1] = np.nan  # the first step
    y[3, 0, 0] = np.inf  # after two finite steps
    backward = [
        v.path
        for v in model.trainable_variables
        if getattr(v, "overwrite_with_gradient", False)
    ]
    assert len(backward) == (0 if case.needs_hessian else 4)
    states = [_state(model)]
    for step in range(4):
        model.train_on_batch(x[step], y[step])
        states.append(_state(model))
    inner = model.optimizer.inner_optimizer
    assert int(to_numpy(inner.iterations)) == 2
    for before, after in ((states[0], states[1]), (states[3], states[4])):
        for path, value in before.items():
            np.testing.assert_array_equal(value, after[path], err_msg=path)
    # The finite steps moved the state, backward state included.
    for path in backward:
        assert not np.array_equal(states[1][path], states[3][path]), path
    for value in states[-1].values():
        assert np.isfinite(value).all()
