"""BatchFormer against a NumPy port of the official encoder layer."""

import keras
import numpy as np
import pytest

import keras_batchopt
from tests.conftest import to_numpy
from tests.references import batchformer_numpy as ref

BatchFormer = keras_batchopt.layers.BatchFormer


def _layer_and_reference(n=6, c=8, heads=4, hidden=None, seed=0):
    rng = np.random.default_rng(seed)
    w = ref.random_weights(c, hidden or c, rng)
    layer = BatchFormer(num_heads=heads, intermediate_dim=hidden, dropout=0.0)
    layer.build((None, c))
    layer.set_weights(ref.to_keras_weights(w, heads))
    x = rng.normal(0, 1, (n, c))
    return layer, w, x


@pytest.mark.parametrize("heads,hidden", [(4, None), (2, 12)])
def test_training_output_matches_the_official_encoder(heads, hidden):
    layer, w, x = _layer_and_reference(heads=heads, hidden=hidden)
    y = np.arange(len(x))
    want, want_y = ref.batchformer(x, y, w, True, num_heads=heads)
    got = to_numpy(layer(x.astype("float32"), training=True))
    # float32 against float64; the outputs are layer-normalized (unit scale).
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)
    np.testing.assert_array_equal(want_y, np.concatenate([y, y]))
    for variant in ref.VARIANTS[1:]:
        wrong, _ = ref.batchformer(x, y, w, True, heads, variant=variant)
        assert not np.allclose(got, wrong, atol=1e-3), variant


def test_samples_attend_to_each_other_and_inference_is_identity():
    layer, _, x = _layer_and_reference()
    x = x.astype("float32")
    full = to_numpy(layer(x, training=True))[len(x) :]
    half = to_numpy(layer(x[:3], training=True))[3:]
    # Row 0's output depends on the rest of the batch.
    assert not np.allclose(full[0], half[0], atol=1e-3)
    default = BatchFormer()
    np.testing.assert_array_equal(to_numpy(default(x)), x)
    np.testing.assert_array_equal(to_numpy(default(x, training=False)), x)


def test_dropout_is_active_in_training():
    layer = BatchFormer(dropout=0.5, seed=1)
    x = np.random.default_rng(0).normal(size=(6, 8)).astype("float32")
    a = to_numpy(layer(x, training=True))
    b = to_numpy(layer(x, training=True))
    assert a.shape == (12, 8) and not np.allclose(a[6:], b[6:])
    np.testing.assert_array_equal(a[:6], x)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"num_heads": 0}, "num_heads"),
        ({"intermediate_dim": 0}, "intermediate_dim"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"layer_norm_epsilon": 0.0}, "layer_norm_epsilon"),
    ],
)
def test_bad_arguments_name_argument_range_and_value(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}` must be .*Received"):
        BatchFormer(**kwargs)


def test_heads_must_divide_features_and_input_must_be_2d():
    with pytest.raises(ValueError, match="`num_heads` must be a divisor"):
        BatchFormer(num_heads=3).build((None, 8))
    with pytest.raises(ValueError, match="batch, features"):
        BatchFormer().build((None, 4, 8))


def test_config_round_trip_and_mixed_precision():
    layer = BatchFormer(num_heads=2, intermediate_dim=6, dropout=0.1, seed=3)
    clone = BatchFormer.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    keras.mixed_precision.set_global_policy("mixed_float16")
    layer = BatchFormer(num_heads=2)
    x = np.random.default_rng(0).normal(size=(5, 8)).astype("float32") * 1e2
    out = layer(x, training=True)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert np.all(np.isfinite(to_numpy(out)))
    assert all(w.dtype == "float32" for w in layer.weights)
