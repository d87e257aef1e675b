"""Weight-standardized layers: the kernel against NumPy references of the
official WS code and DeepMind's scaled WS, the layer output against a plain
Keras layer holding that kernel, and gradients by finite differences."""

import keras
import numpy as np
import pytest

from keras_batchopt import layers
from tests.conftest import to_numpy
from tests.layers import helpers
from tests.references import normalization_numpy as ref


# Keras kernel layout: spatial..., in, out. PyTorch: out, in, spatial...
def _to_torch_layout(kernel):
    rank = kernel.ndim
    return np.transpose(kernel, (rank - 1, rank - 2) + tuple(range(rank - 2)))


def _from_torch_layout(weight):
    rank = weight.ndim
    return np.transpose(weight, tuple(range(2, rank)) + (1, 0))


CASES = [
    (layers.WSConv1D, keras.layers.Conv1D, (2, 9, 3), dict(kernel_size=3)),
    (layers.WSConv2D, keras.layers.Conv2D, (2, 7, 6, 3), dict(kernel_size=3)),
    (
        layers.WSConv3D,
        keras.layers.Conv3D,
        (2, 5, 4, 4, 3),
        dict(kernel_size=(2, 3, 2)),
    ),
]


def _kernel_like(layer, rng, scale=0.2, offset=0.05):
    kernel = rng.normal(offset, scale, layer.kernel.shape)
    layer.kernel.assign(kernel)
    return kernel


@pytest.mark.parametrize("ours, plain, shape, kwargs", CASES)
@pytest.mark.parametrize("layout", helpers.LAYOUTS)
def test_ws_conv_matches_official(ours, plain, shape, kwargs, layout):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype("float32")
    if layout == "channels_first":
        x = np.moveaxis(x, -1, 1)
    layer = ours(4, data_format=layout, **kwargs)
    layer.build(x.shape)
    kernel = _kernel_like(layer, rng)
    expected_kernel = _from_torch_layout(
        ref.weight_standardization_official(_to_torch_layout(kernel))
    )
    np.testing.assert_allclose(
        to_numpy(layer.standardized_kernel(layer.kernel)),
        expected_kernel,
        rtol=1e-5,
        atol=1e-6,
    )
    oracle = plain(4, data_format=layout, **kwargs)
    oracle.build(x.shape)
    oracle.kernel.assign(expected_kernel)
    oracle.bias.assign(to_numpy(layer.bias))
    np.testing.assert_allclose(
        to_numpy(layer(x)), to_numpy(oracle(x)), rtol=1e-5, atol=1e-5
    )


def test_ws_dense_matches_official():
    rng = np.random.default_rng(1)
    layer = layers.WSDense(5, activation="tanh")
    x = rng.normal(size=(3, 7)).astype("float32")
    layer.build(x.shape)
    kernel = _kernel_like(layer, rng)
    standardized = ref.weight_standardization_official(kernel.T).T
    expected = np.tanh(x @ standardized + to_numpy(layer.bias))
    np.testing.assert_allclose(to_numpy(layer(x)), expected, 1e-5, 1e-5)


@pytest.mark.parametrize(
    "ours, plain, shape, kwargs",
    [
        (layers.ScaledWSConv1D, keras.layers.Conv1D, (2, 9, 3), {}),
        (layers.ScaledWSConv2D, keras.layers.Conv2D, (2, 7, 6, 3), {}),
        (layers.ScaledWSConv3D, keras.layers.Conv3D, (2, 5, 4, 4, 3), {}),
    ],
)
def test_scaled_ws_matches_deepmind(ours, plain, shape, kwargs):
    rng = np.random.default_rng(2)
    x = rng.normal(size=shape).astype("float32")
    layer = ours(4, 3, gamma="gelu")
    layer.build(x.shape)
    kernel = _kernel_like(layer, rng)
    gain = rng.uniform(0.5, 1.5, 4)
    layer.gain.assign(gain)
    gamma = layers.nonlinearity_gain("gelu")
    expected_kernel = _from_torch_layout(
        ref.scaled_weight_standardization_deepmind(
            _to_torch_layout(kernel), gain * gamma
        )
    )
    np.testing.assert_allclose(
        to_numpy(layer.standardized_kernel(layer.kernel)),
        expected_kernel,
        rtol=1e-5,
        atol=1e-6,
    )
    oracle = plain(4, 3)
    oracle.build(x.shape)
    oracle.kernel.assign(expected_kernel)
    oracle.bias.assign(to_numpy(layer.bias))
    np.testing.assert_allclose(
        to_numpy(layer(x)), to_numpy(oracle(x)), 1e-5, 1e-5
    )


def test_scaled_ws_floor_and_gain_table():
    """The epsilon floor binds for a constant kernel (variance 0), where
    `"inside"` and `"outside"` differ; the gains are NF-Nets' values."""
    layer = layers.ScaledWSConv2D(2, 1, use_gain=False)
    layer.build((1, 3, 3, 4))
    assert layer.gain is None
    kernel = np.zeros((1, 1, 4, 2))
    kernel[0, 0, 0] = 1e-3  # variance * fan_in = 7.5e-7 < eps = 1e-4
    layer.kernel.assign(kernel)
    w = kernel - kernel.mean((0, 1, 2))
    np.testing.assert_allclose(
        to_numpy(layer.standardized_kernel(layer.kernel)),
        w / np.sqrt(1e-4),
        rtol=1e-5,
    )
    assert layers.nonlinearity_gain("relu") == 1.7139588594436646
    assert layers.nonlinearity_gain("silu") == 1.7881293296813965
    with pytest.raises(ValueError, match="Argument `activation` must be"):
        layers.nonlinearity_gain("mish")


@pytest.mark.parametrize("placement", ["outside", "inside", "floor"])
@pytest.mark.parametrize("unbiased", [True, False])
def test_placements_are_distinct_and_as_documented(placement, unbiased):
    rng = np.random.default_rng(3)
    layer = layers.WSConv2D(
        3, 2, epsilon=0.05, unbiased=unbiased, epsilon_placement=placement
    )
    layer.build((1, 4, 4, 2))
    kernel = _kernel_like(layer, rng, scale=0.1)
    flat = kernel.reshape(-1, 3)
    var = flat.var(0, ddof=1 if unbiased else 0)
    centered = flat - flat.mean(0)
    table = {
        "outside": centered / (np.sqrt(var) + 0.05),
        "inside": centered / np.sqrt(var + 0.05),
        "floor": centered / np.sqrt(np.maximum(var, 0.05)),
    }
    expected = table[placement]
    ours = to_numpy(layer.standardized_kernel(layer.kernel)).reshape(-1, 3)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-7)
    for other, value in table.items():
        if other != placement:
            assert np.abs(ours - value).max() > 1e-3, other


def test_ws_gradient_by_finite_differences():
    rng = np.random.default_rng(4)
    with helpers.float64():
        layer = layers.WSConv2D(3, 2, dtype="float64")
        x = rng.normal(size=(2, 4, 4, 2))
        layer.build(x.shape)
        kernel = rng.normal(0.1, 0.3, layer.kernel.shape)
        bias = to_numpy(layer.bias)

        def fn(k):
            outputs, _ = layer.stateless_call([k, bias], [], x)
            return outputs

        helpers.check_gradient(fn, kernel)
        scaled = layers.ScaledWSConv2D(3, 2, dtype="float64")
        scaled.build(x.shape)
        gain = rng.uniform(0.5, 1.5, 3)

        def scaled_fn(k):
            outputs, _ = scaled.stateless_call([k, bias, gain], [], x)
            return outputs

        helpers.check_gradient(scaled_fn, kernel)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: layers.WSConv2D(2, 3, epsilon=0), "epsilon"),
        (
            lambda: layers.WSConv2D(2, 3, epsilon_placement="x"),
            "epsilon_placement",
        ),
        (lambda: layers.WSConv2D(2, 3, unbiased=1), "unbiased"),
        (lambda: layers.ScaledWSConv2D(2, 3, gamma=-1.0), "gamma"),
        (lambda: layers.ScaledWSConv2D(2, 3, gamma="mish"), "activation"),
        (lambda: layers.ScaledWSConv2D(2, 3, use_gain="yes"), "use_gain"),
    ],
)
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=f"Argument `{message}` must be"):
        make()
