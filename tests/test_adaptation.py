"""keras_batchopt.adaptation: BatchNormalization surgery (to our BN-family
layers and back) and training only the normalization layers."""

import io
import re

import keras
import numpy as np
import pytest

from keras_batchopt import adaptation
from keras_batchopt import layers
from tests.conftest import to_numpy
from tests.references import test_time_norm_numpy as ref


def _block():
    """A nested Sequential: Conv2D -> BN -> ReLU."""
    return keras.Sequential(
        [
            keras.Input((6, 6, 4)),
            keras.layers.Conv2D(4, 3, padding="same", name="inner_conv"),
            keras.layers.BatchNormalization(name="inner_bn", epsilon=1e-5),
            keras.layers.ReLU(),
        ],
        name="block",
    )


def _model():
    """A functional model with a nested Sequential, a convolutional and a
    Dense BatchNormalization (channels_first for one of them), and
    non-trivial moving statistics and affine."""
    inputs = keras.Input((6, 6, 3))
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn_conv", momentum=0.9)(h)
    h = _block()(h)
    h = keras.layers.Permute((3, 1, 2))(h)
    h = keras.layers.BatchNormalization(axis=1, name="bn_first")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(5, name="dense")(h)
    h = keras.layers.BatchNormalization(name="bn_dense", center=False)(h)
    outputs = keras.layers.Dense(3, name="head")(h)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights(
                [
                    rng.uniform(0.5, 2.0, w.shape).astype("float32")
                    if w.name in ("gamma", "moving_variance")
                    else rng.normal(size=w.shape).astype("float32")
                    for w in layer.weights
                ]
            )
    return model


def _all_layers(model):
    return model._flatten_layers(include_self=False, recursive=True)


def _data(n=8, seed=1, shift=0.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(shift, 1.0 + shift, (n, 6, 6, 3))).astype("float32")


def _assert_same_predictions(model, other, x):
    np.testing.assert_allclose(
        to_numpy(model.predict(x, verbose=0)),
        to_numpy(other.predict(x, verbose=0)),
        rtol=1e-6,
        atol=1e-6,
    )


def _types(model):
    return {layer.name: type(layer) for layer in _all_layers(model)}


def test_convert_replaces_every_batch_normalization_and_keeps_outputs():
    """alpha = 0: the converted model's outputs equal the original's in
    inference (predict and call); the weights are copies."""
    model = _model()
    converted = adaptation.convert_batch_normalization(
        model, "AlphaBatchNormalization", alpha=0.0
    )
    types = _types(converted)
    for name in ("bn_conv", "inner_bn", "bn_first", "bn_dense"):
        assert types[name] is layers.AlphaBatchNormalization, name
    assert not any(t is keras.layers.BatchNormalization for t in types.values())
    assert isinstance(converted.get_layer("block"), keras.Sequential)
    x = _data()
    _assert_same_predictions(converted, model, x)
    np.testing.assert_allclose(
        to_numpy(converted(x)), to_numpy(model(x)), rtol=1e-6, atol=1e-6
    )
    # The arguments and the state are carried over.
    old = model.get_layer("bn_first")
    new = converted.get_layer("bn_first")
    assert (new.axis, new.epsilon, new.momentum) == (1, old.epsilon, 0.99)
    assert converted.get_layer("bn_conv").momentum == 0.9
    assert converted.get_layer("bn_dense").beta is None
    inner = converted.get_layer("block").get_layer("inner_bn")
    assert inner.epsilon == 1e-5
    original = model.get_layer("block").get_layer("inner_bn")
    for a, b in zip(inner.weights, original.weights):
        assert a.name == b.name
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    # A copy: changing it leaves the original alone.
    before = to_numpy(original.moving_mean)
    inner.moving_mean.assign(inner.moving_mean + 1.0)
    np.testing.assert_array_equal(to_numpy(original.moving_mean), before)


def test_converted_alpha_bn_matches_the_reference_layer_by_layer():
    """alpha > 0: the converted Sequential's BN layer computes alpha-BN
    with the source statistics of the original."""
    bn = keras.layers.BatchNormalization(epsilon=1e-5)
    model = keras.Sequential([keras.Input((3, 3, 4)), bn])
    rng = np.random.default_rng(2)
    source = [
        rng.uniform(0.5, 1.5, 4),
        rng.normal(size=4),
        rng.normal(size=4),
        rng.uniform(0.5, 2.0, 4),
    ]
    bn.set_weights([s.astype("float32") for s in source])
    converted = adaptation.convert_batch_normalization(
        model, layers.AlphaBatchNormalization, alpha=0.3
    )
    assert isinstance(converted, keras.Sequential)
    x = rng.normal(1.0, 2.0, (5, 3, 3, 4)).astype("float32")
    y = to_numpy(converted.predict(x, verbose=0))
    expected = ref.alpha_batch_norm(
        np.moveaxis(x, -1, 1),
        0.3,
        source[2],
        source[3],
        source[0],
        source[1],
        1e-5,
    )
    np.testing.assert_allclose(
        np.moveaxis(y, -1, 1), expected, rtol=1e-5, atol=1e-6
    )


def test_convert_only_named_layers():
    model = _model()
    converted = adaptation.convert_batch_normalization(
        model,
        "GhostBatchNormalization",
        layer_names=["inner_bn", "bn_dense"],
        virtual_batch_size=2,
    )
    types = _types(converted)
    assert types["inner_bn"] is layers.GhostBatchNormalization
    assert types["bn_dense"] is layers.GhostBatchNormalization
    assert types["bn_conv"] is keras.layers.BatchNormalization
    assert converted.get_layer("bn_dense").virtual_batch_size == 2
    x = _data()
    _assert_same_predictions(converted, model, x)


def test_round_trip_carries_adapted_statistics():
    """BN -> GhostBN, a training step (the moving statistics move), ->
    BN: the plain model gives the adapted model's inference outputs, and
    its config names no keras_batchopt class."""
    model = _model()
    ghost = adaptation.convert_batch_normalization(
        model, "GhostBatchNormalization", virtual_batch_size=4
    )
    ghost.compile(optimizer="sgd", loss="mse")
    ghost.fit(_data(shift=1.0), np.zeros((8, 3)), batch_size=8, verbose=0)
    moved = to_numpy(ghost.get_layer("bn_conv").moving_mean)
    source = to_numpy(model.get_layer("bn_conv").moving_mean)
    assert not np.allclose(moved, source)
    plain = adaptation.to_batch_normalization(ghost)
    types = _types(plain)
    for name in ("bn_conv", "inner_bn", "bn_first", "bn_dense"):
        assert types[name] is keras.layers.BatchNormalization, name
    np.testing.assert_array_equal(
        to_numpy(plain.get_layer("bn_conv").moving_mean), moved
    )
    x = _data(seed=3)
    _assert_same_predictions(plain, ghost, x)
    assert "keras_batchopt" not in plain.to_json()


def test_round_trip_through_alpha_bn_is_the_source_model():
    model = _model()
    alpha = adaptation.convert_batch_normalization(
        model, "AlphaBatchNormalization", alpha=0.5
    )
    x = _data(shift=2.0)
    assert not np.allclose(
        to_numpy(alpha.predict(x, verbose=0)),
        to_numpy(model.predict(x, verbose=0)),
        rtol=1e-3,
    )
    back = adaptation.to_batch_normalization(alpha)
    _assert_same_predictions(back, model, x)


def test_converted_model_saves_and_loads():
    model = _model()
    converted = adaptation.convert_batch_normalization(
        model, "AlphaBatchNormalization", alpha=0.2
    )
    config = keras.saving.serialize_keras_object(converted)
    clone = keras.saving.deserialize_keras_object(config)
    clone.set_weights(converted.get_weights())
    x = _data(shift=1.0)
    np.testing.assert_allclose(
        to_numpy(clone(x)), to_numpy(converted(x)), rtol=1e-6, atol=1e-6
    )


def test_surgery_bad_input():
    model = _model()
    with pytest.raises(ValueError, match="'dense', a Dense"):
        adaptation.convert_batch_normalization(
            model, "AlphaBatchNormalization", layer_names=["dense"]
        )
    with pytest.raises(ValueError, match="'nope', which is not a layer"):
        adaptation.convert_batch_normalization(
            model, "AlphaBatchNormalization", layer_names=["nope"]
        )
    with pytest.raises(ValueError, match="layer_class=.*RepBatchNorm"):
        adaptation.convert_batch_normalization(
            model, layers.RepBatchNormalization
        )
    with pytest.raises(ValueError, match="layer_class='Nope'"):
        adaptation.convert_batch_normalization(model, "Nope")
    with pytest.raises(ValueError, match=r"alpha` must be in \[0, 1\]"):
        adaptation.convert_batch_normalization(
            model, "AlphaBatchNormalization", alpha=2.0
        )
    with pytest.raises(ValueError, match="'bn_conv', a BatchNormalization"):
        adaptation.to_batch_normalization(model, layer_names=["bn_conv"])
    with pytest.raises(ValueError, match="Argument `model`"):
        adaptation.convert_batch_normalization(
            keras.layers.Dense(2), "AlphaBatchNormalization"
        )


def test_surgery_warns_about_layers_it_cannot_reach():
    class Wrapper(keras.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.bn = keras.layers.BatchNormalization()

        def call(self, x):
            return self.bn(x)

    inputs = keras.Input((4,))
    model = keras.Model(inputs, Wrapper()(inputs))
    with pytest.warns(UserWarning, match="inside custom layers"):
        adaptation.convert_batch_normalization(model, "AlphaBatchNormalization")


# ------------------------------------------------- training only normalization
def _trainable_names(model):
    return sorted(w.path for w in model.trainable_weights)


def _summary_counts(model):
    lines = io.StringIO()
    model.summary(print_fn=lambda line, **kwargs: lines.write(line + "\n"))
    text = re.sub(r"\x1b\[[0-9;]*m", "", lines.getvalue())
    counts = {}
    for kind in ("Trainable", "Non-trainable"):
        match = re.search(rf"{kind} params: ([\d,]+)", text)
        counts[kind] = int(match.group(1).replace(",", ""))
    return counts


def _count(weights):
    return int(sum(np.prod(w.shape) for w in weights))


@pytest.mark.parametrize("output_layer", [False, True])
def test_train_only_normalization_counts_and_restore(output_layer):
    model = _model()
    inputs = keras.Input((6, 6, 3))
    h = model(inputs)
    h = keras.layers.LayerNormalization(name="ln")(h)
    outer = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    before = _trainable_names(outer)
    total = _count(outer.weights)
    restore = adaptation.train_only_normalization(
        outer, output_layer=output_layer
    )
    names = _trainable_names(outer)
    affine = [n for n in before if n.split("/")[-1] in ("gamma", "beta")]
    out = [n for n in before if n.startswith("out/")]
    assert names == sorted(affine + (out if output_layer else []))
    # BN (3 with beta, bn_dense without), LN: gamma and beta, 4 channels
    # for the convolutional ones, 5 for bn_dense, 3 for ln.
    expected = 3 * 2 * 4 + 5 + 2 * 3 + (3 * 2 + 2 if output_layer else 0)
    assert _count(outer.trainable_weights) == expected
    assert _summary_counts(outer) == {
        "Trainable": expected,
        "Non-trainable": total - expected,
    }
    # Normalization layers still train with batch statistics.
    assert outer.get_layer(model.name).get_layer("bn_conv").trainable
    restore()
    assert _trainable_names(outer) == before
    assert _summary_counts(outer)["Trainable"] == _count(
        outer.trainable_weights
    )


def test_train_only_normalization_fit_moves_only_affine():
    model = _model()
    adaptation.train_only_normalization(model)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = {w.path: to_numpy(w) for w in model.weights}
    y = np.random.default_rng(4).normal(size=(8, 3)).astype("float32")
    model.fit(_data(), y, batch_size=8, epochs=2, verbose=0)
    for w in model.weights:
        moved = not np.array_equal(to_numpy(w), before[w.path])
        name = w.path.split("/")[-1]
        if name in ("gamma", "moving_mean", "moving_variance"):
            assert moved, w.path
        elif name != "beta":  # a beta before a BN in training has no
            assert not moved, w.path  # gradient: it may stay


def test_train_only_normalization_bad_input():
    with pytest.raises(ValueError, match="`output_layer` must be a bool"):
        adaptation.train_only_normalization(_model(), output_layer=1)
    with pytest.raises(ValueError, match="Argument `model`"):
        adaptation.train_only_normalization(keras.layers.Dense(2))
