"""UnMixTestTimeNormalization against the NumPy port of the official
UnMix-TNS module (tests/references/unmix_tns_numpy.py): trajectories over
i.i.d. and label-sorted streams, its state (reset, save and load, JAX's
stateless predict, non-finite batches), the model surgery and the
argument checks."""

import keras
import numpy as np
import pytest

from keras_batchopt import adaptation
from keras_batchopt import layers
from tests.conftest import BACKEND
from tests.conftest import to_numpy
from tests.layers.helpers import LAYOUTS
from tests.layers.helpers import axis_of
from tests.layers.helpers import from_layout
from tests.layers.helpers import to_layout
from tests.references import unmix_tns_numpy as ref

C = 4
K = 4
EPS = 1e-5
# float32 against the float64 reference; atol for outputs near 0.
RTOL, ATOL = 1e-5, 1e-5
STATE = ("gamma", "beta", "moving_mean", "moving_variance")


def _source(seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        gamma=rng.uniform(0.5, 1.5, C),
        beta=rng.normal(0.0, 0.5, C),
        moving_mean=rng.normal(0.0, 1.0, C),
        moving_variance=rng.uniform(0.5, 2.0, C),
    )


def _layer(layout="channels_last", source=None, shape=(2, C, 3, 3), **kw):
    source = source or _source()
    kw.setdefault("num_components", K)
    kw.setdefault("seed", 3)
    layer = layers.UnMixTestTimeNormalization(
        axis=axis_of(layout), epsilon=EPS, **kw
    )
    layer.build(to_layout(np.zeros(shape), layout).shape)
    for name in STATE:
        getattr(layer, name).assign(source[name].astype("float32"))
    return layer, source


def _reference(layer, source, batch_size=8):
    """The official module with the layer's noise, for batches of
    `batch_size` (its momentum is fixed from the configured batch size)."""
    momentum = ref.official_momentum(0.1, batch_size, 64)
    noise = to_numpy(layer.component_noise).astype("float64")
    return ref.UnMixTNS(
        source["moving_mean"], source["moving_variance"], noise, momentum, EPS
    )


def _stream(shape, sorted_labels, count=24, seed=1):
    """`count` NC... batches of 5 classes, each class a distinct offset
    and scale per channel; i.i.d. labels, or sorted (each batch holds one
    or two classes: label temporal correlation)."""
    rng = np.random.default_rng(seed)
    offsets = rng.normal(0.0, 1.5, (5, shape[1]))
    scales = rng.uniform(0.5, 2.0, (5, shape[1]))
    labels = rng.integers(0, 5, count * shape[0])
    if sorted_labels:
        labels = np.sort(labels)
    labels = labels.reshape(count, shape[0])
    expand = (slice(None), slice(None)) + (None,) * (len(shape) - 2)
    return [
        (
            rng.normal(size=shape) * scales[y][expand] + offsets[y][expand]
        ).astype("float32")
        for y in labels
    ]


def _runner(layer):
    """The layer in a model: `predict_on_batch` (compiled; one trace, where
    eager JAX compiles each operation anew after `clear_session`)."""
    shape = to_layout(np.zeros((1, C, 3, 3)), "channels_last").shape[1:]
    model = keras.Sequential([keras.Input(shape), layer])
    return lambda x: to_numpy(
        model.predict_on_batch(to_layout(x, "channels_last"))
    )


def _check_components(layer, module):
    np.testing.assert_allclose(
        to_numpy(layer.component_means), module.means, rtol=RTOL, atol=ATOL
    )
    np.testing.assert_allclose(
        to_numpy(layer.component_variances), module.vars, rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("sorted_labels", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_trajectory_matches_official(layout, sorted_labels):
    """24 batches of 8 through `model.predict`: the outputs of every batch
    (which depend on the components before it) and the final components
    equal the official module's."""
    layer, source = _layer(layout)
    shape = to_layout(np.zeros((1, C, 3, 3)), layout).shape[1:]
    model = keras.Sequential([keras.Input(shape), layer])
    module = _reference(layer, source)
    stream = _stream((8, C, 3, 3), sorted_labels)
    x = to_layout(np.concatenate(stream), layout)
    y = to_numpy(model.predict(x, batch_size=8, verbose=0))
    expected = np.concatenate(
        [module.forward(x, source["gamma"], source["beta"]) for x in stream]
    )
    np.testing.assert_allclose(
        from_layout(y, layout), expected, rtol=RTOL, atol=ATOL
    )
    _check_components(layer, module)


def test_predict_with_partial_batch_matches_official():
    """`model.predict` over 5 batches of 8 and a last batch of 5, with the
    official fixed momentum (`test_batch_size=8`), rank 3 inputs; on
    TensorFlow without XLA (its graph function), elsewhere as compiled by
    default (JAX: a jitted stateless call whose state is carried back)."""
    layer, source = _layer(shape=(2, C, 6), test_batch_size=8)
    model = keras.Sequential([keras.Input((6, C)), layer])
    model.compile(jit_compile=False if BACKEND == "tensorflow" else "auto")
    module = _reference(layer, source)
    x = np.concatenate(_stream((8, C, 6), True, count=6))[:45]
    x_last = to_layout(x, "channels_last")
    y = to_numpy(model.predict(x_last, batch_size=8, verbose=0))
    expected = np.concatenate(
        [
            module.forward(x[i : i + 8], source["gamma"], source["beta"])
            for i in range(0, len(x), 8)
        ]
    )
    np.testing.assert_allclose(
        from_layout(y, "channels_last"), expected, rtol=RTOL, atol=ATOL
    )
    _check_components(layer, module)


def test_batch_size_one_stream_matches_official():
    """Batch size 1 (statistics over the spatial positions), 20 batches
    through `model.predict`, with the momentum of that batch size."""
    layer, source = _layer(max_batch_size=16)
    model = keras.Sequential([keras.Input((3, 3, C)), layer])
    module = _reference(layer, source, batch_size=1)
    module.momentum = ref.official_momentum(0.1, 1, 16)
    x = np.concatenate(_stream((1, C, 3, 3), True, count=20))
    y = to_numpy(model.predict(to_layout(x, "channels_last"), batch_size=1,
                               verbose=0))  # fmt: skip
    expected = np.concatenate(
        [module.forward(v[None], source["gamma"], source["beta"]) for v in x]
    )
    np.testing.assert_allclose(
        from_layout(y, "channels_last"), expected, rtol=RTOL, atol=ATOL
    )
    _check_components(layer, module)


@pytest.mark.parametrize("k", [1, 3])
def test_initial_components_and_reset(k):
    """The components start as the official ones (K = 1: the source
    statistics, no noise; then p = 1, instance normalization); `reset()`
    returns to them and the stream then repeats."""
    layer, source = _layer(num_components=k)
    module = _reference(layer, source)
    layer.reset()
    _check_components(layer, module)
    if k == 1:
        np.testing.assert_allclose(
            to_numpy(layer.component_means)[0], source["moving_mean"], 1e-6
        )
    stream = _stream((8, C, 3, 3), True, count=2)
    run = _runner(layer)
    first = [run(x) for x in stream]
    layer.reset()
    _check_components(layer, module)
    again = [run(x) for x in stream]
    np.testing.assert_array_equal(np.stack(first), np.stack(again))
    if k == 1:
        x = stream[0]
        m = x.mean((2, 3), keepdims=True)
        v = x.var((2, 3), keepdims=True)
        g = source["gamma"].reshape(1, C, 1, 1)
        b = source["beta"].reshape(1, C, 1, 1)
        np.testing.assert_allclose(
            from_layout(first[0], "channels_last"),
            (x - m) / np.sqrt(v + EPS) * g + b,
            rtol=RTOL,
            atol=ATOL,
        )


def test_noise_follows_seed():
    a, _ = _layer(seed=7)
    b, _ = _layer(seed=7)
    c, _ = _layer(seed=8)
    noise = [to_numpy(layer.component_noise) for layer in (a, b, c)]
    np.testing.assert_array_equal(noise[0], noise[1])
    assert not np.allclose(noise[0], noise[2])


def test_dense_input_uses_source_statistics():
    """Rank 2 (the official `UnMixTNS1d`): source statistics, the
    components untouched."""
    layer, source = _layer(shape=(2, C))
    module = _reference(layer, source)
    x = np.random.default_rng(0).normal(2.0, 3.0, (1, C)).astype("float32")
    y = to_numpy(layer(x))
    np.testing.assert_allclose(
        y,
        module.forward(x, source["gamma"], source["beta"]),
        rtol=RTOL,
        atol=ATOL,
    )
    assert int(to_numpy(layer.components_started)) == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_batch_poisons_nothing(bad):
    """A batch with a NaN or Inf leaves the components unchanged; its
    finite instances get the official outputs; the stream then goes on
    as if the batch had not come."""
    layer, source = _layer()
    module = _reference(layer, source)
    run = _runner(layer)
    for i, x in enumerate(_stream((8, C, 3, 3), True, count=4)):
        if i == 2:
            x = x.copy()
            x[0, 1, 2, 0] = bad
            before = to_numpy(layer.component_means)
            probe = ref.UnMixTNS(
                source["moving_mean"], source["moving_variance"],
                np.zeros((K, C)), 0.0, EPS,
            )  # fmt: skip
            probe.means, probe.vars = module.means, module.vars
            y = from_layout(run(x), "channels_last")
            expected = probe.forward(x[1:], source["gamma"], source["beta"])
            np.testing.assert_allclose(y[1:], expected, RTOL, ATOL)
            np.testing.assert_array_equal(
                to_numpy(layer.component_means), before
            )
            continue
        y = run(x)
        expected = module.forward(x, source["gamma"], source["beta"])
        np.testing.assert_allclose(
            from_layout(y, "channels_last"), expected, RTOL, ATOL
        )
    for weight in layer.weights:
        assert np.isfinite(to_numpy(weight)).all()


def _source_model():
    inputs = keras.Input((5, 5, 3))
    x = keras.layers.Conv2D(C, 3)(inputs)
    x = keras.layers.BatchNormalization(epsilon=EPS, name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(x))
    source = _source()
    model.get_layer("bn").set_weights([source[k] for k in STATE])
    return model


def test_surgery_round_trip_and_mid_stream_save(tmp_path):
    """convert_batch_normalization: the components start from the source
    statistics at the first predict (the official module's first step;
    outputs differ from the source model's); save mid-stream, load
    without custom_objects and continue equals the uninterrupted stream;
    to_batch_normalization gives the source model back."""
    model = _source_model()
    adapted = adaptation.convert_batch_normalization(
        model, "UnMixTestTimeNormalization", num_components=K, seed=0
    )
    layer = adapted.get_layer("bn")
    assert type(layer) is layers.UnMixTestTimeNormalization
    stream = _stream((8, 5, 5, 3), True, count=4)
    x0 = stream[0]
    conv = keras.Model(adapted.inputs, adapted.layers[1].output)
    feats = to_numpy(conv.predict(x0, verbose=0)).astype("float64")
    source = {k: to_numpy(getattr(layer, k)) for k in STATE}
    module = _reference(layer, source)
    module.forward(np.moveaxis(feats, -1, 1), source["gamma"], source["beta"])
    y0 = adapted.predict(x0, verbose=0)
    _check_components(layer, module)
    assert not np.allclose(y0, model.predict(x0, verbose=0), atol=1e-3)
    adapted.predict(stream[1], verbose=0)
    path = tmp_path / "adapted.keras"
    adapted.save(path)
    restored = keras.models.load_model(path)
    for x in stream[2:]:
        np.testing.assert_allclose(
            to_numpy(restored.predict(x, verbose=0)),
            to_numpy(adapted.predict(x, verbose=0)),
            rtol=1e-6,
            atol=1e-6,
        )
    plain = adaptation.to_batch_normalization(adapted)
    assert type(plain.get_layer("bn")) is keras.layers.BatchNormalization
    np.testing.assert_allclose(
        to_numpy(plain.predict(x0, verbose=0)),
        to_numpy(model.predict(x0, verbose=0)),
        rtol=1e-6,
        atol=1e-6,
    )


def test_training_call_restarts_components():
    """A training call moves the moving statistics and sends the
    components back to their start (from the new moving statistics)."""
    layer, source = _layer()
    run = _runner(layer)
    x = _stream((8, C, 3, 3), False, count=1)[0]
    run(x)
    assert int(to_numpy(layer.components_started)) == 1
    layer(to_layout(x, "channels_last"), training=True)
    assert int(to_numpy(layer.components_started)) == 0
    new_source = {k: to_numpy(getattr(layer, k)) for k in STATE}
    assert not np.allclose(new_source["moving_mean"], source["moving_mean"])
    module = _reference(layer, new_source)
    expected = module.forward(x, new_source["gamma"], new_source["beta"])
    np.testing.assert_allclose(
        from_layout(run(x), "channels_last"), expected, RTOL, ATOL
    )


def test_mixed_precision_inference_keeps_float32_components():
    """Eager `layer(x)` under mixed_float16: float16 outputs, float32
    components updated as the official module's on the same inputs."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    layer, source = _layer()
    module = _reference(layer, source)
    x = _stream((8, C, 3, 3), True, count=1)[0]
    y = layer(to_layout(x, "channels_last").astype("float16"))
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    module.forward(x.astype("float16"), source["gamma"], source["beta"])
    for weight in layer.weights:
        if weight.name != "components_started":
            assert weight.dtype == "float32", weight.name
    _check_components(layer, module)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_components": 0}, "num_components.*>= 1.*0"),
        ({"temperature": 0.0}, "temperature.*> 0.*0.0"),
        ({"adaptation_momentum": 1.5}, r"adaptation_momentum.*\[0, 1\].*1.5"),
        ({"adaptation_momentum": -0.1}, r"adaptation_momentum.*-0.1"),
        ({"test_batch_size": 0}, "test_batch_size.*>= 1.*0"),
        ({"max_batch_size": 0}, "max_batch_size.*>= 1.*0"),
        ({"spread": 1.2}, r"spread.*\[0, 1\].*1.2"),
        ({"seed": -1}, "seed.*>= 0.*-1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        layers.UnMixTestTimeNormalization(**kwargs)
