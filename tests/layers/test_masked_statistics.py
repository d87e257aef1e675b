"""Keras masks in the batch-statistics layers, as in Keras's
BatchNormalization: masked positions take no part in the training
statistics (nor in the per-sample ones), and the mask is passed on."""

import keras
import numpy as np
import pytest

from keras_batchopt import layers
from tests.conftest import to_numpy
from tests.layers import helpers

TOL = dict(rtol=1e-5, atol=1e-5)

# name -> factory(momentum, axis); every layer takes 4 channels.
LAYERS = {
    "ghost": lambda m, axis=-1: layers.GhostBatchNormalization(
        4, axis=axis, momentum=m
    ),
    "ghost_sequential": lambda m, axis=-1: layers.GhostBatchNormalization(
        4, axis=axis, momentum=m, moving_statistics="sequential"
    ),
    "bcn": lambda m, axis=-1: layers.BatchChannelNormalization(
        2, axis=axis, momentum=m
    ),
    "bcn_batch": lambda m, axis=-1: layers.BatchChannelNormalization(
        2, axis=axis, momentum=m, batch_statistics="batch"
    ),
    "ibn": lambda m, axis=-1: layers.InstanceBatchNormalization(
        axis=axis, momentum=m
    ),
}
# Layers whose every output depends on the batch statistics only (no
# per-sample statistics): inference ignores the mask.
BATCH_ONLY = ("ghost", "ghost_sequential")


def _moving(layer):
    return to_numpy(layer.moving_mean), to_numpy(layer.moving_variance)


def _twin(layer, shape, seed=0):
    """`layer` and a copy with the same random weights."""
    layer.build(shape)
    rng = np.random.default_rng(seed)
    for w in layer.weights:
        if "variance" in w.name:
            w.assign(rng.uniform(0.5, 2.0, w.shape).astype("float32"))
        else:
            w.assign(rng.normal(0.5, 0.5, w.shape).astype("float32"))
    twin = type(layer).from_config(layer.get_config())
    twin.build(shape)
    twin.set_weights(layer.get_weights())
    return layer, twin


def _lengths_mask(lengths, steps):
    return np.arange(steps)[None, :] < np.asarray(lengths)[:, None]


# ------------------------------------------- Keras's masked-statistics cases
def _padded_data(mask_value, channels):
    """Keras's `test_bachnorm_ignore_masked_values` data: two real steps
    and two padding steps per sample; 4 channels give IBN and BCN batch
    channels of nonzero variance."""
    real = [row[:channels] for row in ([1, 5, 2, -1], [2, 5, 4, 3])]
    pad = [mask_value] * channels
    return np.array([real + [pad, pad] for _ in range(10)], "float32")


@pytest.mark.parametrize("mask_value", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_keras_ignore_masked_values(name, mask_value):
    # Keras 3.15's BatchNormalization test re-run: Masking, momentum 0,
    # five epochs of `fit`; the moving statistics are those of the real
    # steps only: per channel mean [1.5, 5, 3, 1], biased variance
    # [0.25, 0, 1, 4] over 20 real values.
    channels = 2 if name.startswith("ghost") else 4
    data = _padded_data(mask_value, channels)
    inputs = keras.Input((None, channels))
    masked = keras.layers.Masking(mask_value=mask_value)(inputs)
    normed = LAYERS[name](0.0)(masked)
    model = keras.Model(inputs, normed)
    model.compile("rmsprop", loss="mse")
    model.fit(data, data, batch_size=10, epochs=5, verbose=0)
    mean = np.array([1.5, 5.0, 3.0, 1.0])[:channels]
    variance = np.array([0.25, 0.0, 1.0, 4.0])[:channels]
    if name == "ghost_sequential":
        # Momentum 0: the last ghost batch's (2 samples, 4 real values).
        variance = variance * 4 / 3
    elif name in ("bcn_batch", "ibn"):
        variance = variance * 20 / 19  # PyTorch's unbiased update
    if name == "ibn":
        mean, variance = mean[2:], variance[2:]  # the batch channels
    moving_mean, moving_variance = _moving(model.layers[2])
    np.testing.assert_allclose(moving_mean, mean, **TOL)
    np.testing.assert_allclose(moving_variance, variance, **TOL)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_keras_input_fully_masked(name):
    # Keras's `test_input_fully_masked`: no real position, no NaN.
    config = LAYERS[name](0.99).get_config()
    config.update(center=False, scale=False)
    layer = type(LAYERS[name](0.99)).from_config(config)
    x = np.zeros((4, 3, 4), "float32")
    y = to_numpy(layer(x, mask=np.zeros((4, 3), bool), training=True))
    np.testing.assert_array_equal(y, np.zeros_like(x))
    for value in _moving(layer):
        assert np.isfinite(value).all()


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_keras_masked_inference_and_training(name):
    # Keras's `test_correctness`, masked part: in inference the mask
    # changes nothing (batch statistics only); in training it does.
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 10.0, (8, 3, 4)).astype("float32")
    x[:, 1, :] = 0.0
    layer = LAYERS[name](0.0)
    layer(x, training=True)
    mask = to_numpy(keras.layers.Masking().compute_mask(x))
    unmasked = to_numpy(layer(x, training=False))
    masked = to_numpy(layer(x, mask=mask, training=False))
    if name in BATCH_ONLY:
        np.testing.assert_allclose(masked, unmasked, **TOL)
    else:
        # Per-sample statistics exclude the padding in inference too.
        assert not np.allclose(masked, unmasked, **TOL)
    trained = to_numpy(layer(x, mask=mask, training=True))
    assert not np.allclose(trained, unmasked, **TOL)


def _real(x, mask):
    return x[mask]  # (real positions, channels)


def _reference_moving(name, x, mask, old_mean, old_variance, momentum):
    """The moving statistics after one step, from the real positions."""
    m = momentum
    if name.startswith("ghost"):
        mean = old_mean.astype("float64")
        variance = old_variance.astype("float64")
        stats = []
        for g in range(0, len(x), 4):
            rows = _real(x[g : g + 4], mask[g : g + 4])
            if len(rows):
                stats.append((rows.mean(0), rows.var(0), len(rows)))
        if name == "ghost":
            total = sum(n for _, _, n in stats)
            mu = sum(n * a for a, _, n in stats) / total
            var = sum(n * v for _, v, n in stats) / total
            return m * mean + (1 - m) * mu, m * variance + (1 - m) * var
        for mu, var, n in stats:
            mean = m * mean + (1 - m) * mu
            variance = m * variance + (1 - m) * var * n / (n - 1)
        return mean, variance
    rows = _real(x, mask).astype("float64")
    mu, var, n = rows.mean(0), rows.var(0), len(rows)
    if name == "bcn":  # EstBN: the variance around the old moving mean
        var = var + (mu - old_mean) ** 2
    else:
        var = var * n / (n - 1)
    if name == "ibn":
        mu, var = mu[2:], var[2:]
    return m * old_mean + (1 - m) * mu, m * old_variance + (1 - m) * var


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_statistics_over_real_positions(name):
    # Random lengths, and for the ghost layers a ghost batch (samples
    # 4..7) without a real position: it must take no part.
    rng = np.random.default_rng(2)
    x = rng.normal(1.0, 3.0, (12, 6, 4)).astype("float32")
    x[:, 4:] = 100.0  # padding far from the data
    lengths = [4, 2, 3, 1, 0, 0, 0, 0, 2, 4, 1, 3]
    mask = _lengths_mask(lengths, 6)
    layer, _ = _twin(LAYERS[name](0.7), x.shape)
    old_mean, old_variance = _moving(layer)
    y = to_numpy(layer(x, mask=mask, training=True))
    assert np.isfinite(y).all()
    expected = _reference_moving(name, x, mask, old_mean, old_variance, 0.7)
    for value, reference in zip(_moving(layer), expected):
        np.testing.assert_allclose(value, reference, **TOL)


# ------------------------------------------------- padding removed: the same
@pytest.mark.parametrize("layout", helpers.LAYOUTS)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_same_as_without_padding(name, training, layout):
    # Every sample has 3 real steps of 5: the real positions' output and
    # the update equal those of the batch cut to its 3 real steps, in
    # both layouts (the mask is broadcast on the channel axis).
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 1.5, (10, 5, 4)).astype("float32")
    mask = _lengths_mask([3] * 10, 5)
    axis = helpers.axis_of(layout)
    to = (lambda v: v) if axis == -1 else (lambda v: np.moveaxis(v, -1, 1))
    layer, twin = _twin(LAYERS[name](0.8, axis=axis), to(x).shape)
    y = to(to_numpy(layer(to(x), mask=mask, training=training)))
    expected = to(to_numpy(twin(to(x[:, :3]), training=training)))
    np.testing.assert_allclose(y[:, :3], expected, **TOL)
    for a, b in zip(_moving(layer), _moving(twin)):
        np.testing.assert_allclose(a, b, **TOL)


@pytest.mark.parametrize("name", ["ghost", "ghost_sequential"])
def test_ghost_same_as_each_ghost_without_padding(name):
    # Ragged lengths: each ghost batch's real positions, on their own as
    # one ghost batch of rows, give the same training output.
    rng = np.random.default_rng(4)
    x = rng.normal(0.0, 2.0, (10, 5, 4)).astype("float32")
    lengths = [5, 1, 3, 2, 0, 4, 4, 1, 2, 3]
    mask = _lengths_mask(lengths, 5)
    layer, _ = _twin(LAYERS[name](0.8), x.shape)
    y = to_numpy(layer(x, mask=mask, training=True))
    for g in range(0, 10, 4):
        rows = _real(x[g : g + 4], mask[g : g + 4])
        single = layers.GhostBatchNormalization(len(rows))
        single.build(rows.shape)
        single.set_weights(layer.get_weights())
        expected = to_numpy(single(rows, training=True))
        np.testing.assert_allclose(
            _real(y[g : g + 4], mask[g : g + 4]), expected, **TOL
        )


# ------------------------------------------------------ the mask is passed on
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_mask_reaches_next_layer(name):
    # A masked average after the layer: right only if the mask arrives.
    rng = np.random.default_rng(5)
    x = rng.normal(1.0, 1.0, (8, 5, 4)).astype("float32")
    mask = _lengths_mask([5, 2, 3, 1, 4, 4, 2, 3], 5)
    x[~mask] = 0.0
    layer = LAYERS[name](0.9)
    inputs = keras.Input((None, 4))
    normed = layer(keras.layers.Masking()(inputs))
    assert normed._keras_mask is not None
    pooled = keras.layers.GlobalAveragePooling1D()(normed)
    model = keras.Model(inputs, [normed, pooled])
    y, average = (to_numpy(v) for v in model(x, training=False))
    expected = (y * mask[..., None]).sum(1) / mask.sum(1)[:, None]
    np.testing.assert_allclose(average, expected, **TOL)
    np.testing.assert_array_equal(to_numpy(layer.compute_mask(x, mask)), mask)


# ------------------------------------------------ an all-real mask: no change
@pytest.mark.parametrize("batch", [8, 10])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_all_real_mask_is_no_mask(name, batch):
    rng = np.random.default_rng(6)
    x = rng.normal(1.0, 2.0, (batch, 5, 4)).astype("float32")
    layer, twin = _twin(LAYERS[name](0.8), x.shape)
    for _ in range(2):
        y = to_numpy(layer(x, mask=np.ones((batch, 5), bool), training=True))
        expected = to_numpy(twin(x, training=True))
        np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    for a, b in zip(_moving(layer), _moving(twin)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_mask_rank_checked(name):
    layer = LAYERS[name](0.9)
    x = np.ones((2, 3, 4), "float32")
    with pytest.raises(ValueError, match="one dimension less"):
        layer(x, mask=np.ones((2, 3, 4), bool), training=True)
