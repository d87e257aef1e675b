"""Every layer in a Keras model: config round trip, save and load without
custom_objects (then the same next training step), compiled `fit` (jit on
TensorFlow and JAX) with a partial last batch, any inference batch size,
and float32 statistics under mixed precision."""

import contextlib

import keras
import numpy as np
import pytest

from keras_batchopt import layers
from tests.conftest import KERAS_VERSION
from tests.conftest import to_numpy

# name -> (factory, input shape without batch, extra call kwargs)
LAYERS = {
    "ghost": (lambda: layers.GhostBatchNormalization(4), (6, 6, 8)),
    "ghost_sequential": (
        lambda: layers.GhostBatchNormalization(
            3, moving_statistics="sequential"
        ),
        (6, 6, 8),
    ),
    "alpha_bn": (
        lambda: layers.AlphaBatchNormalization(alpha=0.3),
        (6, 6, 8),
    ),
    "unmix_tns": (
        lambda: layers.UnMixTestTimeNormalization(num_components=4, seed=0),
        (6, 6, 8),
    ),
    # Without task ids: plain batch statistics, adaptive momentum and
    # the regularizer (task ids as a model input: its own test file).
    "balanced_bn": (
        lambda: layers.BalancedBatchNormalization(num_tasks=3, kappa=0.4),
        (6, 6, 8),
    ),
    "bcn": (lambda: layers.BatchChannelNormalization(4), (6, 6, 8)),
    "bcn_batch": (
        lambda: layers.BatchChannelNormalization(2, batch_statistics="batch"),
        (6, 6, 8),
    ),
    "ibn": (lambda: layers.InstanceBatchNormalization(), (6, 6, 8)),
    "rn_learned": (
        lambda: layers.RegionNormalization(mode="learned", kernel_size=3),
        (6, 6, 8),
    ),
    "ws_conv2d": (lambda: layers.WSConv2D(8, 3, padding="same"), (6, 6, 8)),
    "scaled_ws_conv2d": (
        lambda: layers.ScaledWSConv2D(8, 3, padding="same", gamma="relu"),
        (6, 6, 8),
    ),
    "ws_conv1d_causal": (
        lambda: layers.WSConv1D(8, 3, padding="causal"),
        (6, 8),
    ),
    "ws_dense": (lambda: layers.WSDense(8), (8,)),
    # Token sequences (batch, tokens, channels); three steps of `fit` pass
    # the warmups.
    "power_norm": (
        lambda: layers.PowerNormalization(warmup_steps=2, groups=2),
        (6, 8),
    ),
    "unified_norm": (
        lambda: layers.UnifiedNormalization(
            window_size=(3, 2), warmup_steps=2, outlier_filtration=True
        ),
        (6, 8),
    ),
    "rep_bn": (lambda: layers.RepBatchNormalization(), (6, 8)),
    "progressive_rep_bn": (
        lambda: layers.ProgressiveRepBN(total_steps=2, warmup_steps=1),
        (6, 8),
    ),
}


def _model(name):
    factory, shape = LAYERS[name]
    inputs = keras.Input(shape)
    x = keras.layers.Dense(8)(inputs)
    x = factory()(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3)(x)
    return keras.Model(inputs, outputs)


def _data(name, n=22):
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, (n,) + LAYERS[name][1]).astype("float32")
    y = rng.integers(0, 3, n)
    return x, y


def _compile(model):
    model.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile="auto",
    )


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_fit_save_load_resume(name, tmp_path):
    x, y = _data(name)
    model = _model(name)
    _compile(model)
    # Batch 8 over 22 samples: the last batch holds 6 (a partial ghost).
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    layer = restored.layers[2]
    assert type(layer) is type(model.layers[2])
    assert layer.get_config() == model.layers[2].get_config()
    for batch in (1, 5):  # any inference batch size
        np.testing.assert_allclose(
            to_numpy(restored.predict(x[:batch], verbose=0)),
            to_numpy(model.predict(x[:batch], verbose=0)),
            rtol=1e-6,
            atol=1e-6,
        )
    # The next training step is the same for the original and the copy.
    for m in (model, restored):
        m.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), 1e-5, 1e-6)
    for weight in model.weights:
        assert np.isfinite(to_numpy(weight)).all()


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_config_round_trip(name):
    layer = LAYERS[name][0]()
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


# Layers whose backward pass sets state (Keras's `overwrite_with_gradient`).
BACKWARD_STATE = ("power_norm", "unified_norm", "progressive_rep_bn")


def _loss_scale_warning(name, policy):
    """Before Keras 3.10 the loss-scale optimizer divides backward state by
    the loss scale; those layers warn under mixed_float16."""
    old_keras = KERAS_VERSION < (3, 10)
    if name in BACKWARD_STATE and policy == "mixed_float16" and old_keras:
        return pytest.warns(UserWarning, match="LossScaleOptimizer")
    return contextlib.nullcontext()


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("name", sorted(LAYERS))
def test_mixed_precision(name, policy):
    """Outputs in the compute dtype, weights and statistics in float32,
    values close to the float32 layer, and no overflow where a float16
    sum of squares would overflow (inputs of about 300)."""
    factory, shape = LAYERS[name]
    rng = np.random.default_rng(1)
    x = rng.normal(300.0, 100.0, (8,) + shape).astype("float32")
    reference = factory()
    expected = to_numpy(reference(x, training=True))
    keras.mixed_precision.set_global_policy(policy)
    layer = factory()
    with _loss_scale_warning(name, policy):
        layer.build(x.shape)
    layer.set_weights(reference.get_weights())
    # Restore the statistics and counters the float32 call moved.
    fresh = factory()
    with _loss_scale_warning(name, policy):
        fresh.build(x.shape)
    layer.set_weights(
        [
            new if "moving" in v.path or not v.trainable else old
            for v, old, new in zip(
                layer.weights, reference.get_weights(), fresh.get_weights()
            )
        ]
    )
    compute = policy.split("_")[1]
    y = layer(x.astype(compute), training=True)
    assert keras.backend.standardize_dtype(y.dtype) == compute
    for weight in layer.weights:
        if not weight.dtype.startswith("int"):  # step counters
            assert weight.dtype == "float32", weight.path
        assert np.isfinite(to_numpy(weight)).all(), weight.path
    y = to_numpy(y).astype("float32")
    assert np.isfinite(y).all()
    tolerance = 2e-2 if compute == "bfloat16" else 5e-3
    scale = np.abs(expected).max()
    np.testing.assert_allclose(y, expected, atol=tolerance * scale, rtol=0)
    if hasattr(reference, "moving_mean"):
        np.testing.assert_allclose(
            to_numpy(layer.moving_mean),
            to_numpy(reference.moving_mean),
            rtol=1e-2,
        )


# The layers that normalize activations; the weight-standardized
# convolutions and Dense normalize their kernels, and their outputs scale
# with their inputs as Keras's Conv2D's and Dense's do.
ACTIVATION_NORMALIZATION = sorted(n for n in LAYERS if "ws_" not in n)


@pytest.mark.parametrize("scale", [1e-4, 1e4])
@pytest.mark.parametrize("name", ACTIVATION_NORMALIZATION)
def test_float16_extreme_scales_stay_finite(name, scale):
    """Under mixed_float16, inputs of scale 1e-4 (variances near float16's
    smallest normal numbers) and 1e4 (squares past float16's largest)
    give finite outputs in training and in inference: the statistics are
    taken in float32."""
    factory, shape = LAYERS[name]
    rng = np.random.default_rng(2)
    x = (rng.normal(0.0, 1.0, (8,) + shape) * scale).astype("float16")
    keras.mixed_precision.set_global_policy("mixed_float16")
    layer = factory()
    with _loss_scale_warning(name, "mixed_float16"):
        layer.build(x.shape)
    for training in (True, False):
        y = to_numpy(layer(x, training=training)).astype("float32")
        assert np.all(np.isfinite(y)), f"training={training}"
    for weight in layer.weights:
        if not weight.dtype.startswith("int"):
            assert np.all(np.isfinite(to_numpy(weight))), weight.path
