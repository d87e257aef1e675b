"""WSConv2D and ScaledWSConv2D against timm's `StdConv2d` and
`ScaledStdConv2d`, run side by side on the torch backend."""

import keras
import numpy as np
import pytest
import torch

from keras_batchopt import layers
from tests.conftest import to_numpy
from tests.peers import timm_attribute


def _pair(ours, theirs, rng):
    x = rng.normal(size=(2, 3, 9, 8)).astype("float32")
    if not ours.built:
        ours.build(x.shape)
    weight = rng.normal(0.05, 0.2, (4, 3, 3, 3)).astype("float32")
    bias = rng.normal(size=4).astype("float32")
    ours.kernel.assign(np.transpose(weight, (2, 3, 1, 0)))
    ours.bias.assign(bias)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(weight))
        theirs.bias.copy_(torch.from_numpy(bias))
        expected = theirs(torch.from_numpy(x)).numpy()
    return to_numpy(ours(x)), expected


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_ws_conv2d_matches_timm_std_conv2d(padding):
    std_conv = timm_attribute("layers", "std_conv", "StdConv2d")
    ours = layers.WSConv2D(
        4,
        3,
        padding=padding,
        data_format="channels_first",
        epsilon=1e-6,
        unbiased=False,
        epsilon_placement="inside",
    )
    theirs = std_conv(3, 4, 3, padding=1 if padding == "same" else 0, bias=True)
    got, expected = _pair(ours, theirs, np.random.default_rng(0))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_scaled_ws_conv2d_matches_timm_scaled_std_conv2d():
    scaled_std_conv = timm_attribute("layers", "std_conv", "ScaledStdConv2d")
    gamma = layers.nonlinearity_gain("relu")
    ours = layers.ScaledWSConv2D(
        4,
        3,
        data_format="channels_first",
        gamma=gamma,
        epsilon=1e-6,
        epsilon_placement="inside",
    )
    theirs = scaled_std_conv(
        3, 4, 3, padding=0, bias=True, gamma=gamma, eps=1e-6
    )
    rng = np.random.default_rng(1)
    gain = rng.uniform(0.5, 1.5, 4).astype("float32")
    ours.build((2, 3, 9, 8))
    ours.gain.assign(gain)
    with torch.no_grad():
        theirs.gain.copy_(torch.from_numpy(gain).view(-1, 1, 1, 1))
    got, expected = _pair(ours, theirs, rng)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert keras.backend.backend() == "torch"
