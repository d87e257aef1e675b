"""The torch steps of the test-time normalization layers
(keras_batchopt/src/backend/torch/test_time_normalization.py) against the
layers' generic `keras.ops` code (fast paths off), step by step: outputs,
every weight, gradients and stateless calls. The generic code itself is
tested against NumPy ports of the official code in the layers' own test
files (which run the torch steps, fast paths being on in tests)."""

import keras
import numpy as np
import pytest
import torch

import keras_batchopt
from keras_batchopt import layers
from tests.conftest import spy_on
from tests.conftest import to_numpy

MODULE = "keras_batchopt.src.backend.torch.test_time_normalization"
C = 4
EPS = 1e-5

# name -> (layer factory given the axis, the torch function it runs)
CASES = {
    "alpha": (
        lambda axis: layers.AlphaBatchNormalization(
            alpha=0.3, axis=axis, epsilon=EPS
        ),
        "alpha_inference",
    ),
    "momentum_decay_batch": (
        lambda axis: layers.MomentumDecayBatchNormalization(
            axis=axis, epsilon=EPS
        ),
        "momentum_decay_inference",
    ),
    "momentum_decay_moving": (
        lambda axis: layers.MomentumDecayBatchNormalization(
            normalize_with="moving", decay_factor=0.8, axis=axis, epsilon=EPS
        ),
        "momentum_decay_inference",
    ),
    "unmix": (
        lambda axis: layers.UnMixTestTimeNormalization(
            num_components=3, seed=1, axis=axis, epsilon=EPS
        ),
        "unmix_inference",
    ),
    "unmix_one_component": (
        lambda axis: layers.UnMixTestTimeNormalization(
            num_components=1,
            test_batch_size=4,
            seed=2,
            axis=axis,
            epsilon=EPS,
        ),
        "unmix_inference",
    ),
}


def _stream(shape, axis):
    """Batches of one stream: shifted data, a batch with a NaN, one with
    an Inf, and a smaller batch."""
    rng = np.random.default_rng(0)
    batches = []
    for step in range(5):
        size = 2 if step == 4 else shape[0]
        x = rng.normal(1.5, 2.0, (size,) + shape[1:]).astype("float32")
        if step == 2:
            x[0].flat[1] = np.nan
        if step == 3:
            x[1].flat[0] = np.inf
        batches.append(x)
    return batches


def _built(name, axis, shape):
    layer = CASES[name][0](axis)
    layer.build(shape)
    rng = np.random.default_rng(1)
    values = dict(
        gamma=rng.uniform(0.5, 1.5, C),
        beta=rng.normal(0.0, 0.5, C),
        moving_mean=rng.normal(0.0, 1.0, C),
        moving_variance=rng.uniform(0.5, 2.0, C),
    )
    for weight in layer.weights:
        if weight.name in values:
            weight.assign(values[weight.name].astype("float32"))
    return layer


def _run(name, fast, shape, axis, dtype="float32"):
    """Outputs and weights after each batch of the stream."""
    layer = _built(name, axis, shape)
    trajectory = []
    with keras_batchopt.config.fast_paths(fast):
        for x in _stream(shape, axis):
            y = layer(keras.ops.cast(x, dtype))
            trajectory.append(
                [to_numpy(y)] + [to_numpy(w) for w in layer.weights]
            )
    return trajectory


def _assert_equal_trajectories(a, b):
    assert len(a) == len(b)
    for step, (xs, ys) in enumerate(zip(a, b)):
        assert len(xs) == len(ys)
        for i, (x, y) in enumerate(zip(xs, ys)):
            np.testing.assert_allclose(
                x, y, rtol=1e-6, atol=1e-6, err_msg=f"step {step}, array {i}"
            )


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize(
    "shape,axis",
    [((6, 3, 3, C), -1), ((6, C, 3, 3), 1), ((6, 2, C), -1)],
    ids=["channels_last", "channels_first", "rank3"],
)
def test_torch_step_equals_generic_step(name, shape, axis, monkeypatch):
    calls = spy_on(MODULE, CASES[name][1], monkeypatch)
    generic = _run(name, False, shape, axis)
    assert not calls
    fast = _run(name, True, shape, axis)
    assert len(calls) == len(generic)
    _assert_equal_trajectories(fast, generic)


@pytest.mark.parametrize("name", ["alpha", "momentum_decay_batch"])
def test_torch_step_rank2_and_batch_of_one(name):
    """Rank-2 inputs: the batch statistics over the batch; for the
    momentum-decay layer a batch of one value per channel is skipped."""
    shape = (5, C)
    for fast in (True, False):
        layer = _built(name, -1, shape)
        with keras_batchopt.config.fast_paths(fast):
            x = np.random.default_rng(2).normal(size=shape).astype("f4")
            ys = [to_numpy(layer(x))]
            if name != "alpha":  # alpha-BN raises on one value per channel
                ys.append(to_numpy(layer(x[:1])))
            ys += [to_numpy(w) for w in layer.weights]
        if fast:
            first = ys
    _assert_equal_trajectories([first], [ys])


@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
@pytest.mark.parametrize("name", ["alpha", "momentum_decay_moving", "unmix"])
def test_torch_step_other_input_dtypes(name, dtype):
    """float64 inputs are computed in float64, bfloat16 in float32."""
    shape = (6, 3, 3, C)
    generic = _run(name, False, shape, -1, dtype)
    fast = _run(name, True, shape, -1, dtype)
    _assert_equal_trajectories(fast, generic)


@pytest.mark.parametrize(
    "name", ["alpha", "momentum_decay_batch", "momentum_decay_moving", "unmix"]
)
def test_torch_step_gradients_equal_generic(name):
    """Gradients with respect to the input and the affine weights (TENT
    adapts gamma and beta through these layers in inference)."""
    shape = (6, 3, 3, C)
    x = _stream(shape, -1)[0]
    weights = np.random.default_rng(3).normal(size=shape).astype("float32")
    grads = []
    for fast in (True, False):
        layer = _built(name, -1, shape)
        inputs = torch.tensor(x, requires_grad=True)
        with keras_batchopt.config.fast_paths(fast):
            y = layer(inputs)
        (y * torch.tensor(weights)).sum().backward()
        grads.append(
            [inputs.grad.numpy()]
            + [w.value.grad.numpy() for w in layer.trainable_weights]
        )
    _assert_equal_trajectories([grads[0]], [grads[1]])


@pytest.mark.parametrize("name", ["momentum_decay_batch", "unmix"])
def test_torch_step_in_stateless_call(name):
    """`stateless_call` returns the new state and leaves the variables."""
    shape = (6, 3, 3, C)
    x = keras.ops.convert_to_tensor(_stream(shape, -1)[0])
    results = []
    for fast in (True, False):
        layer = _built(name, -1, shape)
        before = [to_numpy(w) for w in layer.non_trainable_weights]
        with keras_batchopt.config.fast_paths(fast):
            y, state = layer.stateless_call(
                [w.value for w in layer.trainable_weights],
                [w.value for w in layer.non_trainable_weights],
                x,
            )
        after = [to_numpy(w) for w in layer.non_trainable_weights]
        for b, a in zip(before, after):
            np.testing.assert_array_equal(a, b)
        results.append([to_numpy(y)] + [to_numpy(s) for s in state])
    _assert_equal_trajectories([results[0]], [results[1]])
    assert any(not np.array_equal(s, b) for s, b in zip(results[0][1:], before))
