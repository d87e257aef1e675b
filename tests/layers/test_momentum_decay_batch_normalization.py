"""MomentumDecayBatchNormalization against a NumPy port of DUA's official
adaptation loop (tests/references/momentum_decay_bn_numpy.py)."""

import keras
import numpy as np
import pytest

from keras_batchopt import layers
from tests.conftest import to_numpy
from tests.layers.helpers import LAYOUTS
from tests.layers.helpers import axis_of
from tests.layers.helpers import from_layout
from tests.layers.helpers import to_layout
from tests.references import momentum_decay_bn_numpy as ref

C = 4
EPS = 1e-5
# float32 against the float64 reference; atol for values near 0.
RTOL, ATOL = 1e-5, 1e-6
# Outputs are gamma * (x - mean) / std: float32 rounding of x and of the
# mean (|x| up to ~10 std in these streams) gives absolute errors of up to
# ~1e-6 on any output, near 0 included.
OUT_ATOL = 5e-6
BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")


def _source(seed=0, channels=C):
    rng = np.random.default_rng(seed)
    return dict(
        gamma=rng.uniform(0.5, 1.5, channels),
        beta=rng.normal(0.0, 0.5, channels),
        running_mean=rng.normal(0.0, 1.0, channels),
        running_var=rng.uniform(0.5, 2.0, channels),
    )


def _set(layer, source):
    names = dict(
        zip(BN_WEIGHTS, ("gamma", "beta", "running_mean", "running_var"))
    )
    for weight in layer.weights:
        if weight.name in names:
            weight.assign(source[names[weight.name]].astype("float32"))


def _state(layer):
    return {w.name: to_numpy(w) for w in layer.weights}


def _stream(shape, count=24, seed=1):
    """`count` NC... batches of a drifting covariate shift."""
    rng = np.random.default_rng(seed)
    batches = []
    for i in range(count):
        offset = rng.normal(1.0 + i / count, 1.0, (1, shape[1]))
        offset = offset.reshape((1, -1) + (1,) * (len(shape) - 2))
        x = rng.normal(size=shape) * rng.uniform(0.5, 3.0) + offset
        batches.append(x.astype("float32"))
    return batches


def _model(layout, shape, **kwargs):
    layer = layers.MomentumDecayBatchNormalization(
        axis=axis_of(layout), epsilon=EPS, **kwargs
    )
    inputs = keras.Input(to_layout(np.zeros(shape), layout).shape[1:])
    model = keras.Model(inputs, layer(inputs))
    source = _source()
    _set(layer, source)
    return model, layer, source


def _run(model, x, mode):
    if mode == "call":
        return to_numpy(model(x))
    return to_numpy(model.predict(x, batch_size=len(x), verbose=0))


def _check_layer(layer, bn, momentum, batches):
    state = _state(layer)
    np.testing.assert_allclose(
        state["moving_mean"], bn["running_mean"], RTOL, ATOL
    )
    np.testing.assert_allclose(
        state["moving_variance"], bn["running_var"], RTOL, ATOL
    )
    np.testing.assert_allclose(state["adaptation_momentum"], momentum, RTOL)
    assert state["adapted_batches"] == batches


@pytest.mark.parametrize(
    "mode, layout, normalize_with",
    [
        ("call", layout, normalize_with)
        for layout in LAYOUTS
        for normalize_with in ("batch", "moving")
    ]
    # predict and compiled predict (torch.compile takes ~20 s on a shared
    # CPU) for one case each; they differ from a call in the state
    # handling only.
    + [
        ("predict", "channels_last", "batch"),
        ("compiled", "channels_last", "batch"),
    ],
)
def test_stream_matches_official_loop(mode, layout, normalize_with):
    """20 batches (sizes 1 to 6) of a drifting stream: outputs, moving
    statistics and momentum after each batch, through `model(x)`,
    `model.predict` (JAX's stateless predict included) and a
    jit-compiled predict."""
    model, layer, source = _model(
        layout, (2, C, 3, 3), normalize_with=normalize_with
    )
    if mode == "compiled":
        model.compile(jit_compile=True)
    dua = ref.DUA([source], [], EPS)
    sizes = [1, 6, 3, 6] * 5
    if mode == "compiled":
        sizes = [6] * 20  # one trace (torch.compile recompiles per shape)
    for i, (size, x) in enumerate(zip(sizes, _stream((6, C, 3, 3), 20))):
        x = x[:size]
        y = from_layout(_run(model, to_layout(x, layout), mode), layout)
        expected = dua.adapt(x)
        if normalize_with == "moving":
            expected = dua.predict(x)
        np.testing.assert_allclose(y, expected, RTOL, OUT_ATOL)
        _check_layer(layer, dua.bns[0], dua.mom_pre, i + 1)


def test_two_layer_network_matches_official_loop():
    """BN -> ReLU -> 1x1 conv -> BN adapted on 20 batches (the official
    adaptation pass), then run with adaptation off (the official eval
    pass): every running statistic and the eval outputs after each
    batch."""
    rng = np.random.default_rng(2)
    kernel = rng.normal(0.0, 0.7, (C, 3))
    inputs = keras.Input((3, 3, C))
    first = layers.MomentumDecayBatchNormalization(epsilon=EPS)
    second = layers.MomentumDecayBatchNormalization(epsilon=EPS)
    h = keras.layers.ReLU()(first(inputs))
    h = keras.layers.Dense(3, use_bias=False)(h)
    model = keras.Model(inputs, second(h))
    sources = [_source(0), _source(1, 3)]
    _set(first, sources[0])
    _set(second, sources[1])
    model.layers[3].kernel.assign(kernel.astype("float32"))
    between = [lambda x: np.einsum("nchw,co->nohw", np.maximum(x, 0.0), kernel)]
    dua = ref.DUA(sources, between, EPS)
    probe = _stream((5, C, 3, 3), count=1, seed=9)[0]
    for i, x in enumerate(_stream((8, C, 3, 3), count=20)):
        y = to_numpy(model(to_layout(x, "channels_last")))
        np.testing.assert_allclose(
            from_layout(y, "channels_last"), dua.adapt(x), RTOL, OUT_ATOL
        )
        for layer, bn in zip((first, second), dua.bns):
            _check_layer(layer, bn, dua.mom_pre, i + 1)
        first.adapting = second.adapting = False
        y = to_numpy(model(to_layout(probe, "channels_last")))
        first.adapting = second.adapting = True
        np.testing.assert_allclose(
            from_layout(y, "channels_last"), dua.predict(probe), RTOL, OUT_ATOL
        )
    assert int(to_numpy(first.adapted_batches)) == 20


def test_predict_changes_the_state():
    """`model.predict` (JAX's stateless predict included) writes the
    adapted statistics back to the layer."""
    model, layer, source = _model("channels_last", (2, C, 3, 3))
    x = to_layout(_stream((4, C, 3, 3), count=1)[0], "channels_last")
    model.predict(x, verbose=0)
    state = _state(layer)
    assert not np.allclose(state["moving_mean"], source["running_mean"])
    np.testing.assert_allclose(
        state["source_mean"], source["running_mean"], 1e-6
    )
    assert state["adapted_batches"] == 1


def test_reset_returns_to_the_source():
    """After a stream (and a change of gamma, as training does), `reset`
    restores the source weights and momentum; the same stream then gives
    the same trajectory."""
    model, layer, source = _model("channels_last", (2, C, 3, 3))
    stream = [to_layout(x, "channels_last") for x in _stream((4, C, 3, 3), 8)]
    first = [_run(model, x, "call") for x in stream]
    layer.gamma.assign(layer.gamma * 2.0)
    layer.reset()
    state = _state(layer)
    for name, key in zip(
        BN_WEIGHTS, ("gamma", "beta", "running_mean", "running_var")
    ):
        np.testing.assert_allclose(state[name], source[key], 1e-6)
    assert state["adapted_batches"] == 0
    np.testing.assert_allclose(state["adaptation_momentum"], 0.1)
    again = [_run(model, x, "call") for x in stream]
    np.testing.assert_allclose(np.stack(again), np.stack(first), 1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_batch_is_skipped(bad):
    """A batch with a NaN or Inf leaves the state unchanged and is
    normalized with the moving statistics (its finite samples stay
    finite); the stream then goes on as if it had not come."""
    model, layer, source = _model("channels_last", (2, C, 3, 3))
    dua = ref.DUA([source], [], EPS)
    for i, x in enumerate(_stream((5, C, 3, 3), count=6)):
        if i == 2:
            x = x.copy()
            x[0, 1, 1, 1] = bad
            y = from_layout(
                _run(model, to_layout(x, "channels_last"), "predict"),
                "channels_last",
            )
            np.testing.assert_allclose(
                y[1:], dua.predict(x[1:]), RTOL, OUT_ATOL
            )
            assert np.isfinite(y[1:]).all()
            continue
        y = _run(model, to_layout(x, "channels_last"), "predict")
        np.testing.assert_allclose(
            from_layout(y, "channels_last"), dua.adapt(x), RTOL, OUT_ATOL
        )
    _check_layer(layer, dua.bns[0], dua.mom_pre, 5)
    for weight in model.weights:
        assert np.isfinite(to_numpy(weight)).all()


def test_one_value_per_channel_is_skipped():
    """A Dense output at batch size 1 has no unbiased variance: no update,
    normalized with the moving statistics."""
    layer = layers.MomentumDecayBatchNormalization(epsilon=EPS)
    layer.build((None, C))
    source = _source()
    _set(layer, source)
    x = np.random.default_rng(0).normal(size=(1, C)).astype("float32")
    expected = ref.batch_norm_eval(x, **_eval_args(source))
    np.testing.assert_allclose(to_numpy(layer(x)), expected, RTOL, OUT_ATOL)
    assert int(to_numpy(layer.adapted_batches)) == 0


def test_zero_momentum_is_the_source_model():
    """initial_momentum = min_momentum = 0 with the moving statistics:
    Keras's BatchNormalization in inference, batch after batch."""
    model, layer, source = _model(
        "channels_last",
        (2, C, 3, 3),
        initial_momentum=0.0,
        min_momentum=0.0,
        normalize_with="moving",
    )
    for x in _stream((4, C, 3, 3), count=3):
        y = from_layout(
            _run(model, to_layout(x, "channels_last"), "call"), "channels_last"
        )
        expected = ref.batch_norm_eval(x, **_eval_args(source))
        np.testing.assert_allclose(y, expected, RTOL, OUT_ATOL)
    np.testing.assert_allclose(
        to_numpy(layer.moving_mean), source["running_mean"], 1e-6
    )
    assert int(to_numpy(layer.adapted_batches)) == 3


def _eval_args(source):
    return dict(
        running_mean=source["running_mean"],
        running_var=source["running_var"],
        gamma=source["gamma"],
        beta=source["beta"],
        eps=EPS,
    )


def test_training_adapts_with_the_decaying_momentum():
    """`training=True` while adapting: PyTorch's train mode with the
    decaying momentum (Liu et al.'s adaptation); with adapting off:
    Keras's BatchNormalization."""
    rng = np.random.default_rng(5)
    x = rng.normal(2.0, 3.0, (6, C, 3, 3)).astype("float32")
    model, layer, source = _model("channels_last", (2, C, 3, 3))
    dua = ref.DUA([source], [], EPS)
    for _ in range(3):
        y = to_numpy(layer(to_layout(x, "channels_last"), training=True))
        np.testing.assert_allclose(
            from_layout(y, "channels_last"), dua.adapt(x), RTOL, OUT_ATOL
        )
    _check_layer(layer, dua.bns[0], dua.mom_pre, 3)
    layer.reset()
    layer.adapting = False
    keras_bn = keras.layers.BatchNormalization(momentum=0.99, epsilon=EPS)
    keras_bn.build(to_layout(x, "channels_last").shape)
    _set(keras_bn, source)
    for m in (layer, keras_bn):
        y = to_numpy(m(to_layout(x, "channels_last"), training=True))
    state = _state(layer)
    for weight in keras_bn.weights:
        np.testing.assert_allclose(state[weight.name], to_numpy(weight), 1e-6)
    assert state["adapted_batches"] == 0


def test_save_load_mid_stream(tmp_path):
    """Saved and loaded (without custom_objects) after 10 batches, the
    model continues as an uninterrupted one."""
    model, layer, _ = _model("channels_last", (2, C, 3, 3))
    stream = [to_layout(x, "channels_last") for x in _stream((4, C, 3, 3), 16)]
    for x in stream[:10]:
        _run(model, x, "call")
    path = tmp_path / "dua.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored.layers[1]) is layers.MomentumDecayBatchNormalization
    assert restored.layers[1].get_config() == layer.get_config()
    for x in stream[10:]:
        np.testing.assert_allclose(
            _run(restored, x, "call"), _run(model, x, "call"), 1e-6
        )
    for a, b in zip(restored.weights, model.weights):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), 1e-6)


def test_serialization_without_custom_objects():
    layer = layers.MomentumDecayBatchNormalization(
        initial_momentum=0.2,
        decay_factor=0.9,
        min_momentum=0.01,
        normalize_with="moving",
        axis=1,
    )
    config = keras.saving.serialize_keras_object(layer)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is layers.MomentumDecayBatchNormalization
    assert clone.get_config() == layer.get_config()
    assert (clone.initial_momentum, clone.normalize_with) == (0.2, "moving")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_statistics_in_float32(policy):
    keras.mixed_precision.set_global_policy(policy)
    try:
        compute = policy.split("_")[1]
        model, layer, source = _model(
            "channels_last", (2, C, 3, 3), normalize_with="moving"
        )
        dua = ref.DUA([source], [], EPS)
        for x in _stream((4, C, 3, 3), count=3):
            x_in = to_layout(x * 100.0, "channels_last").astype(compute)
            y = layer(x_in)
            assert keras.backend.standardize_dtype(y.dtype) == compute
            dua.adapt(from_layout(x_in.astype("float32"), "channels_last"))
        for weight in layer.weights:
            assert weight.dtype in ("float32", "int32")
        np.testing.assert_allclose(
            to_numpy(layer.moving_variance), dua.bns[0]["running_var"], 1e-5
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(initial_momentum=-0.1),
            r"`initial_momentum` must be in \[0, 1\]. Received: "
            r"initial_momentum=-0.1",
        ),
        (dict(initial_momentum=1.5), r"`initial_momentum` must be in \[0, 1\]"),
        (
            dict(decay_factor=0.0),
            r"`decay_factor` must be in \(0, 1\]. Received: decay_factor=0.0",
        ),
        (dict(decay_factor=1.01), r"`decay_factor` must be in \(0, 1\]"),
        (
            dict(min_momentum=0.2),
            r"`min_momentum` must be in \[0, 0.1\] \(at most "
            r"initial_momentum=0.1.*Received: min_momentum=0.2",
        ),
        (
            dict(initial_momentum=0.9, min_momentum=0.2),
            r"`min_momentum` must be in \[0, 0.1\].*Received: min_momentum=0.2",
        ),
        (dict(min_momentum=-0.01), r"`min_momentum` must be in \[0, 1\]"),
        (dict(normalize_with="test"), r"`normalize_with` must be one of"),
        (dict(momentum=1.0), r"`momentum` must be in \[0, 1\)"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        layers.MomentumDecayBatchNormalization(**kwargs)
    layer = layers.MomentumDecayBatchNormalization()
    with pytest.raises(ValueError, match="`adapting` must be a bool"):
        layer.adapting = 1
