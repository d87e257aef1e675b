"""The batch-statistics layers against NumPy references of the official
modules (tests/references/normalization_numpy.py), over several training
steps so the moving statistics are checked too, in both layouts."""

import keras
import numpy as np
import pytest

from keras_batchopt import layers
from tests.conftest import to_numpy
from tests.layers import helpers
from tests.references import normalization_numpy as ref

RTOL, ATOL = 1e-5, 1e-5


@pytest.fixture
def float64():
    with helpers.float64():
        yield


def _params(rng, channels):
    return (
        rng.uniform(0.5, 1.5, channels),
        rng.normal(0.0, 0.3, channels),
    )


def _assign(layer, **values):
    for name, value in values.items():
        getattr(layer, name).assign(np.asarray(value, "float32"))


def _moving(layer):
    return {
        "mean": to_numpy(layer.moving_mean),
        "var": to_numpy(layer.moving_variance),
    }


def _check_state(layer, state):
    np.testing.assert_allclose(
        to_numpy(layer.moving_mean), state["mean"], rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        to_numpy(layer.moving_variance), state["var"], rtol=RTOL, atol=ATOL
    )


# ------------------------------------------------------------------ Ghost BN
@pytest.mark.parametrize("layout", helpers.LAYOUTS)
@pytest.mark.parametrize("batch", [8, 10])
@pytest.mark.parametrize("moving_statistics", ["mean", "sequential"])
def test_ghost_bn_matches_reference(layout, batch, moving_statistics):
    rng = np.random.default_rng(1)
    channels, momentum, eps = 3, 0.8, 1e-3
    gamma, beta = _params(rng, channels)
    layer = layers.GhostBatchNormalization(
        4,
        axis=helpers.axis_of(layout),
        momentum=momentum,
        epsilon=eps,
        moving_statistics=moving_statistics,
    )
    layer.build(
        helpers.to_layout(np.zeros((batch, channels, 5, 4)), layout).shape
    )
    _assign(layer, gamma=gamma, beta=beta)
    state = {"mean": np.zeros(channels), "var": np.ones(channels)}
    for step in range(4):
        x = rng.normal(2.0, 3.0, (batch, channels, 5, 4))
        if moving_statistics == "sequential":
            expected, state = ref.ghost_bn_official(
                x, 4, state, 1 - momentum, eps, gamma, beta
            )
        else:
            expected, state = ref.ghost_bn_averaged(
                x, 4, state, momentum, eps, gamma, beta
            )
        y = layer(helpers.to_layout(x.astype("float32"), layout), training=True)
        np.testing.assert_allclose(
            helpers.from_layout(to_numpy(y), layout), expected, RTOL, ATOL
        )
        _check_state(layer, state)
    x = rng.normal(2.0, 3.0, (3, channels, 5, 4))  # any inference batch
    y = layer(helpers.to_layout(x.astype("float32"), layout), training=False)
    np.testing.assert_allclose(
        helpers.from_layout(to_numpy(y), layout),
        ref.batch_norm_inference(x, state, eps, gamma, beta),
        RTOL,
        ATOL,
    )


@pytest.mark.parametrize("layout", helpers.LAYOUTS)
def test_ghost_bn_matches_tf_keras_virtual_batch_size(layout):
    """tf-keras's own GhostBN test setup (shape 6x10x10x3, v=2, gamma 3,
    beta 2, momentum 0.8, eps 1e-3, 5 batches). tf-keras interleaves the
    ghost batches; permuting the batch makes them contiguous."""
    rng = np.random.default_rng(2)
    batch, v, channels = 6, 2, 3
    k = batch // v
    permutation = [j + t * k for j in range(k) for t in range(v)]
    inverse = np.argsort(permutation)
    gamma, beta = np.full(channels, 3.0), np.full(channels, 2.0)
    layer = layers.GhostBatchNormalization(
        v,
        axis=helpers.axis_of(layout),
        momentum=0.8,
        gamma_initializer=keras.initializers.Constant(3.0),
        beta_initializer=keras.initializers.Constant(2.0),
    )
    state = {"mean": np.zeros(channels), "var": np.ones(channels)}
    for _ in range(5):
        x = rng.random((batch, channels, 10, 10))
        expected, state = ref.ghost_bn_tf_keras(
            x, v, state, 0.8, 1e-3, gamma, beta
        )
        ours = layer(
            helpers.to_layout(x[permutation].astype("float32"), layout),
            training=True,
        )
        ours = helpers.from_layout(to_numpy(ours), layout)[inverse]
        np.testing.assert_allclose(ours, expected, RTOL, ATOL)
        _check_state(layer, state)


def test_ghost_bn_sequential_differs_from_mean():
    """The two moving-statistics rules are distinguishable (so each
    reference test above can fail)."""
    x = np.random.default_rng(3).normal(1.0, 2.0, (16, 3)).astype("float32")
    states = []
    for mode in ("mean", "sequential"):
        layer = layers.GhostBatchNormalization(4, moving_statistics=mode)
        layer(x, training=True)
        states.append(to_numpy(layer.moving_mean))
    assert np.abs(states[0] - states[1]).max() > 1e-3


def test_ghost_bn_gradient(float64):
    x = np.random.default_rng(4).normal(size=(10, 3, 2, 2))
    layer = layers.GhostBatchNormalization(4, axis=1, dtype="float64")
    layer.build(x.shape)
    _assign_random(layer, ("gamma", "beta"))
    helpers.check_gradient(_train_fn(layer), x)


RN_AFFINE = ("foreground_gamma", "foreground_beta", "background_gamma",
             "background_beta")  # fmt: skip


def _rn_affine(rng, channels, exact_in_float32=False):
    """Random values of RegionNormalization's four affine weights (float32
    values held in float64 when `exact_in_float32`)."""
    values = {}
    for name in RN_AFFINE:
        value = rng.normal(0.0, 0.5, channels)
        if exact_in_float32:
            value = value.astype("float32").astype("float64")
        values[name] = value
    return values


def _assign_random(layer, names, seed=0):
    rng = np.random.default_rng(seed)
    for name in names:
        variable = getattr(layer, name)
        variable.assign(rng.uniform(0.5, 1.5, variable.shape))


def _train_fn(layer, **kwargs):
    def fn(x):
        outputs, _ = layer.stateless_call(
            layer.trainable_variables,
            layer.non_trainable_variables,
            x,
            training=True,
            **kwargs,
        )
        return outputs

    return fn


# ------------------------------------------------------------------ BCN
@pytest.mark.parametrize("layout", helpers.LAYOUTS)
@pytest.mark.parametrize("batch_statistics", ["estimated", "batch"])
def test_bcn_matches_reference(layout, batch_statistics):
    rng = np.random.default_rng(5)
    batch, channels, groups, momentum, eps = 2, 8, 4, 0.9, 1e-5
    layer = layers.BatchChannelNormalization(
        groups,
        axis=helpers.axis_of(layout),
        batch_statistics=batch_statistics,
        momentum=momentum,
        epsilon=eps,
    )
    layer.build(
        helpers.to_layout(np.zeros((batch, channels, 4, 3)), layout).shape
    )
    params = (*_params(rng, channels), *_params(rng, groups))
    _assign(
        layer,
        gamma=params[0],
        beta=params[1],
        group_gamma=params[2],
        group_beta=params[3],
    )
    state = {"mean": np.zeros(channels), "var": np.ones(channels)}
    for _ in range(4):
        x = rng.normal(1.0, 2.0, (batch, channels, 4, 3))
        expected, state = ref.bcn_official(
            x,
            groups,
            state,
            1 - momentum,
            eps,
            params,
            batch_statistics == "estimated",
        )
        y = layer(helpers.to_layout(x.astype("float32"), layout), training=True)
        np.testing.assert_allclose(
            helpers.from_layout(to_numpy(y), layout), expected, RTOL, ATOL
        )
        _check_state(layer, state)
    x = rng.normal(1.0, 2.0, (1, channels, 4, 3))
    y = layer(helpers.to_layout(x.astype("float32"), layout))
    np.testing.assert_allclose(
        helpers.from_layout(to_numpy(y), layout),
        ref.bcn_official_inference(x, groups, state, eps, params),
        RTOL,
        ATOL,
    )


def test_bcn_gradients(float64):
    """`"batch"`: ordinary autograd, against finite differences.
    `"estimated"`: no gradient through the statistics, so the training
    gradient is that of inference with the updated moving statistics."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 4, 3, 4))
    layer = layers.BatchChannelNormalization(
        2, batch_statistics="batch", dtype="float64"
    )
    layer.build(x.shape)
    _assign_random(layer, ("gamma", "beta", "group_gamma", "group_beta"))
    helpers.check_gradient(_train_fn(layer), x)

    layer = layers.BatchChannelNormalization(2, momentum=0.5, dtype="float64")
    layer.build(x.shape)
    _assign_random(layer, ("gamma", "beta", "group_gamma", "group_beta"))
    weights = rng.normal(size=x.shape)
    training = helpers.autograd(_train_fn(layer), x, weights)
    layer(x, training=True)  # moves the moving statistics
    inference = helpers.autograd(lambda v: layer(v, training=False), x, weights)
    np.testing.assert_allclose(training, inference, rtol=1e-10, atol=1e-12)
    helpers.check_gradient(lambda v: layer(v, training=False), x)


# ------------------------------------------------------------------ IBN
@pytest.mark.parametrize("layout", helpers.LAYOUTS)
@pytest.mark.parametrize("ratio", [0.5, 0.25])
def test_ibn_matches_reference(layout, ratio):
    rng = np.random.default_rng(7)
    channels, momentum, eps = 8, 0.9, 1e-5
    gamma, beta = _params(rng, channels)
    layer = layers.InstanceBatchNormalization(
        ratio, axis=helpers.axis_of(layout)
    )
    layer.build(helpers.to_layout(np.zeros((4, channels, 5, 3)), layout).shape)
    _assign(layer, gamma=gamma, beta=beta)
    state = {
        "mean": np.zeros(channels - int(channels * ratio)),
        "var": np.ones(channels - int(channels * ratio)),
    }
    for training, batch in ((True, 4), (True, 4), (True, 3), (False, 2)):
        x = rng.normal(1.0, 2.0, (batch, channels, 5, 3))
        expected, state = ref.ibn_official(
            x, ratio, state, 1 - momentum, eps, gamma, beta, training
        )
        y = layer(
            helpers.to_layout(x.astype("float32"), layout), training=training
        )
        np.testing.assert_allclose(
            helpers.from_layout(to_numpy(y), layout), expected, RTOL, ATOL
        )
        _check_state(layer, state)


def test_ibn_gradient(float64):
    x = np.random.default_rng(8).normal(size=(3, 3, 2, 6))
    layer = layers.InstanceBatchNormalization(dtype="float64")
    layer.build(x.shape)
    _assign_random(layer, ("gamma", "beta"))
    helpers.check_gradient(_train_fn(layer), x)


# ------------------------------------------------------------------ RN
def _mask(rng, batch, size, fraction=0.4):
    return (rng.random((batch, 1) + size) < fraction).astype("float64")


@pytest.mark.parametrize("layout", helpers.LAYOUTS)
@pytest.mark.parametrize("mask_size", [(16, 12), (8, 6), (11, 5)])
def test_rn_basic_matches_reference(layout, mask_size):
    rng = np.random.default_rng(9)
    x = rng.normal(size=(2, 4, 8, 6))
    x[:, :, :4] += 5.0
    mask = _mask(rng, 2, mask_size)
    layer = layers.RegionNormalization(data_format=layout)
    layer.build(helpers.to_layout(x, layout).shape)
    values = _rn_affine(rng, 4)
    _assign(layer, **values)
    expected = ref.rn_b_official(
        x,
        mask,
        values["foreground_gamma"],
        values["foreground_beta"],
        values["background_gamma"],
        values["background_beta"],
    )
    for training in (True, False):  # batch statistics in both
        y = layer(
            helpers.to_layout(x.astype("float32"), layout),
            region_mask=helpers.to_layout(mask.astype("float32"), layout),
            training=training,
        )
        np.testing.assert_allclose(
            helpers.from_layout(to_numpy(y), layout), expected, 1e-4, 1e-4
        )


@pytest.mark.parametrize("layout", helpers.LAYOUTS)
def test_rn_basic_large_mean_is_exact(layout):
    # Means of 1000 (ulp 6e-5) and a small region: one-pass float32 means
    # are off by ~1e-4 here; the corrected two-pass moments are not.
    rng = np.random.default_rng(13)
    x = rng.normal(1000.0, 1.0, size=(4, 3, 12, 10))
    mask = _mask(rng, 4, (12, 10), fraction=0.05)
    x = (x + 20.0 * mask).astype("float32").astype("float64")
    layer = layers.RegionNormalization(data_format=layout)
    layer.build(helpers.to_layout(x, layout).shape)
    values = _rn_affine(rng, 3, exact_in_float32=True)
    _assign(layer, **values)
    expected = ref.rn_b_official(x, mask, *values.values())
    y = layer(
        helpers.to_layout(x.astype("float32"), layout),
        region_mask=helpers.to_layout(mask.astype("float32"), layout),
    )
    np.testing.assert_allclose(
        helpers.from_layout(to_numpy(y), layout), expected, 1e-5, 1e-5
    )


def test_rn_empty_region_gives_zero_and_no_nan():
    x = np.random.default_rng(10).normal(size=(2, 6, 6, 3)).astype("float32")
    for fill in (0.0, 1.0):
        mask = np.full((2, 6, 6, 1), fill, "float32")
        layer = layers.RegionNormalization(data_format="channels_last")
        y = to_numpy(layer(x, region_mask=mask))
        expected = ref.rn_b_official(
            np.moveaxis(x, -1, 1).astype("float64"),
            np.moveaxis(mask, -1, 1),
            *[np.zeros(3)] * 4,
        )
        assert np.isfinite(y).all()
        np.testing.assert_allclose(np.moveaxis(y, -1, 1), expected, 1e-4, 1e-4)


@pytest.mark.parametrize("layout", helpers.LAYOUTS)
def test_rn_learned_matches_reference(layout):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(2, 3, 9, 7))
    layer = layers.RegionNormalization(
        mode="learned", kernel_size=3, data_format=layout
    )
    layer.build(helpers.to_layout(x, layout).shape)
    attention = rng.normal(0.0, 0.4, (1, 2, 3, 3))
    gamma_conv = (rng.normal(0.0, 0.3, (1, 1, 3, 3)), rng.normal(size=1))
    beta_conv = (rng.normal(0.0, 0.3, (1, 1, 3, 3)), rng.normal(size=1))
    hwio = lambda k: np.transpose(k, (2, 3, 1, 0))  # noqa: E731
    layer.attention.kernel.assign(hwio(attention))
    layer.gamma_conv.kernel.assign(hwio(gamma_conv[0]))
    layer.gamma_conv.bias.assign(gamma_conv[1])
    layer.beta_conv.kernel.assign(hwio(beta_conv[0]))
    layer.beta_conv.bias.assign(beta_conv[1])
    # A threshold far (> 1e-3) from every attention value, so that float32
    # and float64 pick the same region; about half the pixels are in it.
    _, probe = ref.rn_l_official(x, attention, gamma_conv, beta_conv, 0.5)
    values = np.sort(
        1
        / (
            1
            + np.exp(
                -ref.conv2d_same(
                    np.concatenate(
                        [x.mean(1, keepdims=True), x.max(1, keepdims=True)], 1
                    ),
                    attention,
                )
            )
        ).ravel()
    )
    gaps = np.diff(values)
    middle = len(values) // 2 + np.argmax(gaps[len(values) // 2 :][:20])
    threshold = float((values[middle] + values[middle + 1]) / 2)
    assert gaps[middle] > 2e-3
    layer.threshold = threshold
    expected, mask = ref.rn_l_official(
        x, attention, gamma_conv, beta_conv, threshold
    )
    assert 0 < mask.mean() < 1
    y = layer(helpers.to_layout(x.astype("float32"), layout))
    np.testing.assert_allclose(
        helpers.from_layout(to_numpy(y), layout), expected, 1e-4, 1e-4
    )


def test_rn_gradient(float64):
    rng = np.random.default_rng(12)
    x = rng.normal(size=(2, 5, 4, 3))
    mask = _mask(rng, 2, (5, 4))
    mask = np.moveaxis(mask, 1, -1)
    layer = layers.RegionNormalization(
        data_format="channels_last", dtype="float64"
    )
    layer.build(x.shape)
    _assign_random(layer, ("foreground_gamma", "background_gamma"))
    helpers.check_gradient(lambda v: layer(v, region_mask=mask), x)


@pytest.mark.parametrize("layout", helpers.LAYOUTS)
def test_rn_gradient_of_the_affine_weights(float64, layout):
    # RN-B's gradient with respect to its four affine weights (stacked as
    # one (4, channels) value) and, in channels_first, to the input: the
    # JAX code differentiates the whole normalization by its own rule.
    rng = np.random.default_rng(15)
    x = helpers.to_layout(rng.normal(size=(2, 3, 5, 4)) + 2.0, layout)
    mask = helpers.to_layout(_mask(rng, 2, (5, 4)), layout)
    layer = layers.RegionNormalization(data_format=layout, dtype="float64")
    layer.build(x.shape)
    order = [v.name for v in layer.trainable_variables]
    values = _rn_affine(rng, 3)
    stacked = np.stack([values[name] for name in order])

    def of_weights(w):
        outputs, _ = layer.stateless_call(
            [w[i] for i in range(4)], [], x, region_mask=mask
        )
        return outputs

    helpers.check_gradient(of_weights, stacked)
    _assign(layer, **values)
    helpers.check_gradient(lambda v: layer(v, region_mask=mask), x)


# ------------------------------------------------------------ bad arguments
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: layers.GhostBatchNormalization(0), "virtual_batch_size"),
        (lambda: layers.GhostBatchNormalization(2.5), "virtual_batch_size"),
        (
            lambda: layers.GhostBatchNormalization(4, moving_statistics="x"),
            "moving_statistics",
        ),
        (lambda: layers.GhostBatchNormalization(4, momentum=1.0), "momentum"),
        (lambda: layers.GhostBatchNormalization(4, epsilon=0.0), "epsilon"),
        (lambda: layers.InstanceBatchNormalization(1.0), "ratio"),
        (lambda: layers.InstanceBatchNormalization(0.0), "ratio"),
        (lambda: layers.BatchChannelNormalization(0), "groups"),
        (
            lambda: layers.BatchChannelNormalization(batch_statistics="x"),
            "batch_statistics",
        ),
        (lambda: layers.RegionNormalization(mode="x"), "mode"),
        (lambda: layers.RegionNormalization(threshold=1.5), "threshold"),
        (lambda: layers.RegionNormalization(kernel_size=4), "kernel_size"),
        (lambda: layers.GhostBatchNormalization(4, axis="1"), "axis"),
    ],
)
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=f"Argument `{message}` must be"):
        make()


def test_bad_shapes():
    x = np.zeros((2, 4, 4, 6), "float32")
    with pytest.raises(ValueError, match=r"Argument `groups` must be.*4"):
        layers.BatchChannelNormalization(4)(x)
    with pytest.raises(ValueError, match=r"Argument `ratio` must be"):
        layers.InstanceBatchNormalization(0.1)(x)
    with pytest.raises(ValueError, match=r"Argument `axis` must be"):
        layers.GhostBatchNormalization(2, axis=4)(x)
    rn = layers.RegionNormalization(data_format="channels_last")
    with pytest.raises(ValueError, match="needs `region_mask`"):
        rn(x)
    with pytest.raises(ValueError, match=r"Argument `region_mask` must be"):
        rn(x, region_mask=np.zeros((2, 4, 4, 2), "float32"))
    with pytest.raises(ValueError, match=r"Argument `region_mask` must be"):
        rn(x, region_mask=np.zeros((3, 4, 4, 1), "float32"))
    with pytest.raises(ValueError, match="takes no `region_mask`"):
        layers.RegionNormalization(mode="learned")(
            x, region_mask=np.zeros((2, 4, 4, 1), "float32")
        )
