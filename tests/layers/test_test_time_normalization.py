"""Test-time normalization layers against NumPy ports of the official
modules (tests/references/test_time_norm_numpy.py): alpha-BN."""

import keras
import numpy as np
import pytest

from keras_batchopt import layers
from tests.conftest import to_numpy
from tests.layers.helpers import LAYOUTS
from tests.layers.helpers import axis_of
from tests.layers.helpers import from_layout
from tests.layers.helpers import to_layout
from tests.references import test_time_norm_numpy as ref

C = 4
EPS = 1e-5
# float32 against the float64 reference; atol for outputs near 0.
RTOL, ATOL = 1e-5, 1e-6


def _source(seed=0, channels=C):
    """Source statistics and affine, as a trained BN holds them."""
    rng = np.random.default_rng(seed)
    return dict(
        gamma=rng.uniform(0.5, 1.5, channels),
        beta=rng.normal(0.0, 0.5, channels),
        moving_mean=rng.normal(0.0, 1.0, channels),
        moving_variance=rng.uniform(0.5, 2.0, channels),
    )


def _layer(alpha, layout="channels_last", source=None, **kwargs):
    source = source or _source()
    layer = layers.AlphaBatchNormalization(
        alpha=alpha, axis=axis_of(layout), epsilon=EPS, **kwargs
    )
    return layer, source


def _set(layer, source):
    layer.set_weights(
        [
            source[k].astype("float32")
            for k in ("gamma", "beta", "moving_mean", "moving_variance")
        ]
    )


def _expected(x_nchw, alpha, source):
    return ref.alpha_batch_norm(
        x_nchw,
        alpha,
        source["moving_mean"],
        source["moving_variance"],
        source["gamma"],
        source["beta"],
        EPS,
    )


def _stream(shape, count=20, seed=1):
    """`count` NC... batches whose distribution drifts (a covariate
    shift: scale and offset per channel change from batch to batch)."""
    rng = np.random.default_rng(seed)
    batches = []
    for i in range(count):
        offset = rng.normal(0.5 * i / count, 1.0, (1, shape[1]))
        offset = offset.reshape((1, -1) + (1,) * (len(shape) - 2))
        scale = rng.uniform(0.5, 3.0)
        x = rng.normal(size=shape) * scale + offset
        batches.append(x.astype("float32"))
    return batches


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.6, 1.0])
@pytest.mark.parametrize("shape", [(1, C, 3, 5), (3, C, 4, 4), (5, C)])
def test_alpha_bn_matches_reference(layout, alpha, shape):
    layer, source = _layer(alpha, layout)
    x = np.random.default_rng(2).normal(2.0, 3.0, shape).astype("float32")
    layer.build(to_layout(x, layout).shape)
    _set(layer, source)
    y = to_numpy(layer(to_layout(x, layout)))
    np.testing.assert_allclose(
        from_layout(y, layout),
        _expected(x, alpha, source),
        rtol=RTOL,
        atol=ATOL,
    )


def _model(layout, alpha, shape):
    layer, source = _layer(alpha, layout)
    model = keras.Sequential(
        [keras.Input(to_layout(np.zeros(shape), layout).shape[1:]), layer]
    )
    _set(layer, source)
    return model, source


def _run(model, x, mode):
    if mode == "call":
        return to_numpy(model(x))
    return to_numpy(model.predict(x, batch_size=len(x), verbose=0))


@pytest.mark.parametrize("mode", ["call", "predict", "compiled"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_alpha_bn_stream_matches_reference(mode, layout):
    """20 batches of a drifting stream, batch sizes 1 to 8, through
    `model(x)`, `model.predict` and a jit-compiled predict."""
    model, source = _model(layout, 0.1, (2, C, 3, 3))
    if mode == "compiled":
        model.compile(jit_compile=True)
    sizes = [1, 8, 3, 8] * 5
    for size, x in zip(sizes, _stream((8, C, 3, 3))):
        x = x[:size]
        y = _run(model, to_layout(x, layout), mode)
        np.testing.assert_allclose(
            from_layout(y, layout),
            _expected(x, 0.1, source),
            rtol=RTOL,
            atol=ATOL,
        )


def test_alpha_bn_dense_input_at_batch_size_one_raises():
    """One value per channel: the unbiased test variance is undefined."""
    layer, source = _layer(0.1)
    layer.build((None, C))
    x = np.ones((1, C), "float32")
    with pytest.raises(ValueError, match="two values per channel"):
        layer(x)
    # alpha = 0 (the source model) and batches of 2 run.
    source_only, _ = _layer(0.0)
    source_only.build((None, C))
    _set(source_only, source)
    np.testing.assert_allclose(
        to_numpy(source_only(x)),
        ref.source_batch_norm(
            x,
            source["moving_mean"],
            source["moving_variance"],
            source["gamma"],
            source["beta"],
            EPS,
        ),
        rtol=RTOL,
        atol=ATOL,
    )
    _set(layer, source)
    x2 = np.random.default_rng(0).normal(size=(2, C)).astype("float32")
    np.testing.assert_allclose(
        to_numpy(layer(x2)), _expected(x2, 0.1, source), rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_alpha_bn_non_finite_batch_poisons_nothing(bad):
    """A batch with a NaN or Inf: its statistics are skipped (source
    statistics alone), so its finite samples stay finite; the batches
    after it match the reference."""
    model, source = _model("channels_last", 0.5, (2, C, 3, 3))
    stream = _stream((6, C, 3, 3), count=4)
    for i, x in enumerate(stream):
        if i == 1:
            x = x.copy()
            x[0, 2, 1, 1] = bad
            y = from_layout(
                _run(model, to_layout(x, "channels_last"), "predict"),
                "channels_last",
            )
            np.testing.assert_allclose(
                y[1:], _expected(x[1:], 0.0, source), rtol=RTOL, atol=ATOL
            )
            assert np.isfinite(y[1:]).all()
            continue
        y = _run(model, to_layout(x, "channels_last"), "predict")
        np.testing.assert_allclose(
            from_layout(y, "channels_last"),
            _expected(x, 0.5, source),
            rtol=RTOL,
            atol=ATOL,
        )
    for weight in model.weights:
        assert np.isfinite(to_numpy(weight)).all()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_alpha_bn_mask(layout):
    """With a mask, the test-batch statistics are over the real tokens;
    masked tokens do not change the outputs of the real ones."""
    rng = np.random.default_rng(3)
    x = rng.normal(1.0, 2.0, (3, C, 5)).astype("float32")  # N, C, T
    mask = np.ones((3, 5), bool)
    mask[0, 3:] = mask[2, 1:] = False
    layer, source = _layer(0.4, layout)
    layer.build(to_layout(x, layout).shape)
    _set(layer, source)
    y = from_layout(to_numpy(layer(to_layout(x, layout), mask=mask)), layout)
    # The real tokens as a batch of (tokens, C, 1) samples.
    tokens = np.moveaxis(x, 1, 2)[mask][:, :, None]
    expected = _expected(tokens, 0.4, source)[:, :, 0]
    np.testing.assert_allclose(np.moveaxis(y, 1, 2)[mask], expected, RTOL, ATOL)
    x_changed = x.copy()
    x_changed[0, :, 3:] = 1e4
    y_changed = from_layout(
        to_numpy(layer(to_layout(x_changed, layout), mask=mask)), layout
    )
    np.testing.assert_allclose(
        np.moveaxis(y_changed, 1, 2)[mask], expected, RTOL, ATOL
    )


def test_alpha_bn_masking_layer_in_a_model():
    """Keras's Masking feeds the mask; the layer passes it on."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 6, C)).astype("float32")
    x[1, 4:] = 0.0
    layer, source = _layer(1.0)
    inputs = keras.Input((6, C))
    h = keras.layers.Masking(0.0)(inputs)
    model = keras.Model(inputs, layer(h))
    _set(layer, source)
    y = to_numpy(model(x))
    tokens = np.concatenate([x[0], x[1, :4]])[:, :, None]
    expected = _expected(tokens, 1.0, source)[:, :, 0]
    np.testing.assert_allclose(
        np.concatenate([y[0], y[1, :4]]), expected, rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("masked", [False, True])
def test_alpha_bn_training_is_keras_batch_normalization(masked):
    """In training: Keras's BatchNormalization, outputs and moving
    statistics (with a mask too)."""
    rng = np.random.default_rng(5)
    x = rng.normal(2.0, 3.0, (6, 3, 3, C)).astype("float32")
    mask = None
    if masked:
        x = x.reshape(6, 9, C)
        mask = rng.uniform(size=(6, 9)) < 0.6
    layer, source = _layer(0.3, momentum=0.8)
    keras_bn = keras.layers.BatchNormalization(momentum=0.8, epsilon=EPS)
    for m in (layer, keras_bn):
        m.build(x.shape)
        _set(m, source)
    np.testing.assert_allclose(
        to_numpy(layer(x, training=True, mask=mask)),
        to_numpy(keras_bn(x, training=True, mask=mask)),
        rtol=RTOL,
        atol=ATOL,
    )
    for a, b in zip(layer.weights, keras_bn.weights):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6)


def test_alpha_bn_save_load_mid_stream(tmp_path):
    """Saved and loaded (without custom_objects) halfway through a stream,
    the model continues with the outputs of an uninterrupted one."""
    model, source = _model("channels_last", 0.2, (2, C, 3, 3))
    stream = [to_layout(x, "channels_last") for x in _stream((4, C, 3, 3))]
    for x in stream[:10]:
        _run(model, x, "predict")
    path = tmp_path / "alpha.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored.layers[0]) is layers.AlphaBatchNormalization
    assert restored.layers[0].get_config() == model.layers[0].get_config()
    for x in stream[10:]:
        np.testing.assert_allclose(
            _run(restored, x, "predict"), _run(model, x, "predict"), 1e-6
        )


def test_alpha_bn_serialization_without_custom_objects():
    layer = layers.AlphaBatchNormalization(alpha=0.25, axis=1, epsilon=1e-5)
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is layers.AlphaBatchNormalization
    assert clone.get_config() == layer.get_config()
    assert clone.alpha == 0.25


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_alpha_bn_mixed_precision_inference(policy):
    """Statistics in float32, output in the compute dtype, close to the
    float32 reference; no float16 overflow for inputs of about 300."""
    keras.mixed_precision.set_global_policy(policy)
    x = np.random.default_rng(6).normal(300.0, 100.0, (4, C, 3, 3))
    layer, source = _layer(0.5)
    compute = policy.split("_")[1]
    x_in = to_layout(x, "channels_last").astype(compute)
    layer.build(x_in.shape)
    _set(layer, source)
    y = layer(x_in)
    assert keras.backend.standardize_dtype(y.dtype) == compute
    for weight in layer.weights:
        assert weight.dtype == "float32"
    expected = _expected(
        from_layout(x_in.astype("float32"), "channels_last"), 0.5, source
    )
    y = from_layout(to_numpy(y).astype("float32"), "channels_last")
    tolerance = 2e-2 if compute == "bfloat16" else 5e-3
    np.testing.assert_allclose(
        y, expected, atol=tolerance * np.abs(expected).max(), rtol=0
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(alpha=-0.1),
            r"`alpha` must be in \[0, 1\]. Received: alpha=-0.1",
        ),
        (dict(alpha=1.5), r"`alpha` must be in \[0, 1\]. Received: alpha=1.5"),
        (dict(alpha=float("nan")), r"`alpha` must be in \[0, 1\]"),
        (
            dict(alpha="0.1"),
            r"`alpha` must be in \[0, 1\]. Received: alpha='0.1'",
        ),
        (dict(momentum=1.0), r"`momentum` must be in \[0, 1\)"),
        (dict(epsilon=0.0), r"`epsilon` must be a finite float > 0"),
        (dict(axis=1.5), r"`axis` must be an int"),
    ],
)
def test_alpha_bn_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        layers.AlphaBatchNormalization(**kwargs)


def test_alpha_bn_bad_shapes():
    layer = layers.AlphaBatchNormalization(axis=0)
    with pytest.raises(ValueError, match="axis"):
        layer.build((None, C))
    layer = layers.AlphaBatchNormalization()
    with pytest.raises(ValueError, match="rank >= 2"):
        layer.build((C,))
    layer.build((None, 3, C))
    with pytest.raises(ValueError, match="one dimension less"):
        layer(np.ones((2, 3, C), "float32"), mask=np.ones((2, 3, C), bool))
