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


# Test-time (DUA) and source-free (Liu et al.) BN adaptation.

MDBN = "MomentumDecayBatchNormalization"
MDBN_NAMES = ("bn_conv", "inner_bn", "bn_first", "bn_dense")


def _mdbn_layers(model):
    return [model.get_layer(n) for n in MDBN_NAMES[:1] + MDBN_NAMES[2:]] + [
        model.get_layer("block").get_layer("inner_bn")
    ]


def test_momentum_decay_converted_model_keeps_outputs_before_adaptation():
    """Converted, with adaptation off: the original model's outputs (a
    zero momentum is the source model too: see the layer's tests)."""
    model = _model()
    x = _data(shift=1.0)
    converted = adaptation.convert_batch_normalization(model, MDBN)
    for layer in _mdbn_layers(converted):
        assert type(layer) is layers.MomentumDecayBatchNormalization
        layer.adapting = False
    _assert_same_predictions(converted, model, x)


def test_momentum_decay_round_trip_carries_adapted_statistics():
    """Adapted on shifted batches, then converted back: the plain model
    predicts as the adapted one with adaptation off."""
    model = _model()
    converted = adaptation.convert_batch_normalization(model, MDBN)
    for seed in range(3):
        converted.predict(_data(seed=seed, shift=2.0), verbose=0)
    layer = converted.get_layer("bn_conv")
    assert int(to_numpy(layer.adapted_batches)) == 3
    moved = to_numpy(layer.moving_mean)
    assert not np.allclose(moved, to_numpy(layer.source_mean))
    plain = adaptation.to_batch_normalization(converted)
    for name in MDBN_NAMES[:1] + MDBN_NAMES[2:]:
        assert type(plain.get_layer(name)) is keras.layers.BatchNormalization
    np.testing.assert_array_equal(
        to_numpy(plain.get_layer("bn_conv").moving_mean), moved
    )
    for mdbn in _mdbn_layers(converted):
        mdbn.adapting = False
    _assert_same_predictions(plain, converted, _data(seed=7, shift=2.0))


def _image_model():
    return adaptation.convert_batch_normalization(_model(), MDBN)


def test_adapt_on_sample_is_one_adaptation_step_on_the_copies():
    """The state after `adapt_on_sample` is that of one adaptation pass
    on the augmented copies; the prediction uses it without an update;
    the `adapting` flags are restored."""
    from keras_batchopt.src.adaptation import momentum_decay

    image = _data(n=1, seed=4, shift=1.0)[0]
    source = _model()
    adapted = adaptation.convert_batch_normalization(source, MDBN)
    adapted.get_layer("bn_first").adapting = False
    y = adaptation.adapt_on_sample(adapted, image, copies=8, seed=3)
    copies = momentum_decay.augmented_copies(
        image, 8, 4, True, True, 0.0, np.random.default_rng(3)
    )
    manual = adaptation.convert_batch_normalization(source, MDBN)
    manual.predict(copies, verbose=0)
    for a, b in zip(_mdbn_layers(adapted), _mdbn_layers(manual)):
        for name in ("moving_mean", "moving_variance", "adapted_batches"):
            np.testing.assert_allclose(
                to_numpy(getattr(a, name)), to_numpy(getattr(b, name)), 1e-6
            )
        np.testing.assert_allclose(to_numpy(a.adaptation_momentum), 0.094)
    assert adapted.get_layer("bn_first").adapting is False
    assert adapted.get_layer("bn_conv").adapting is True
    for layer in _mdbn_layers(manual):
        layer.adapting = False
    np.testing.assert_allclose(
        y, manual.predict(image[None], verbose=0), rtol=1e-5, atol=1e-6
    )
    assert int(to_numpy(adapted.get_layer("bn_conv").adapted_batches)) == 1


def test_augmented_copies():
    """Crops are windows of the padded image, rotations multiples of 90
    degrees, flips horizontal; without any, the image itself."""
    from keras_batchopt.src.adaptation import momentum_decay

    image = np.arange(4 * 4 * 2, dtype="float32").reshape(4, 4, 2)
    rng = np.random.default_rng(0)
    same = momentum_decay.augmented_copies(image, 3, 0, False, False, 0, rng)
    np.testing.assert_array_equal(same, np.stack([image] * 3))
    turned = momentum_decay.augmented_copies(image, 16, 0, False, True, 0, rng)
    rotations = [np.rot90(image, k) for k in range(4)]
    found = {
        next(k for k, r in enumerate(rotations) if (r == c).all())
        for c in turned
    }
    assert found == {0, 1, 2, 3}
    flipped = momentum_decay.augmented_copies(image, 16, 0, True, False, 0, rng)
    kinds = {int((c == image[:, ::-1]).all()) for c in flipped}
    assert kinds == {0, 1}
    padded = np.pad(image, ((2, 2), (2, 2), (0, 0)), constant_values=-1.0)
    crops = momentum_decay.augmented_copies(image, 16, 2, False, False, -1, rng)
    windows = [padded[i : i + 4, j : j + 4] for i in range(5) for j in range(5)]
    for crop in crops:
        assert any((crop == w).all() for w in windows)
    assert (crops == -1.0).any()


def test_adapt_on_sample_bad_input():
    adapted = _image_model()
    image = _data(n=1)[0]
    with pytest.raises(ValueError, match="hold MomentumDecayBatchNorm"):
        adaptation.adapt_on_sample(_model(), image)
    with pytest.raises(ValueError, match=r"`copies` must be an integer >= 2"):
        adaptation.adapt_on_sample(adapted, image, copies=1)
    with pytest.raises(ValueError, match=r"`x` must be one image"):
        adaptation.adapt_on_sample(adapted, _data(n=2))
    with pytest.raises(ValueError, match=r"`rotate=True` needs a square"):
        adaptation.adapt_on_sample(adapted, image[:5])
    with pytest.raises(ValueError, match=r"`data_format` must be one of"):
        adaptation.adapt_on_sample(adapted, image, data_format="NHWC")
    assert int(to_numpy(adapted.get_layer("bn_conv").adapted_batches)) == 0


def _transferability(layer):
    """TransNorm's test-mode alpha (thuml/TransNorm src/trans_norm.py)."""
    eps = layer.epsilon
    source = to_numpy(layer.source_mean) / np.sqrt(
        to_numpy(layer.source_variance) + eps
    )
    target = to_numpy(layer.moving_mean) / np.sqrt(
        to_numpy(layer.moving_variance) + eps
    )
    prob = 1.0 / (1.0 + np.abs(source - target))
    return len(prob) * prob / prob.sum()


def _affine_distance(layer):
    total = 0.0
    if layer.scale:
        total = total + np.abs(
            to_numpy(layer.gamma) - to_numpy(layer.source_gamma)
        )
    if layer.center:
        total = total + np.abs(
            to_numpy(layer.beta) - to_numpy(layer.source_beta)
        )
    return total


def test_consistency_loss_matches_numpy():
    """0 before adaptation; after it, with the affine moved, the
    transferability-weighted (and the plain) L1 distance to the source."""
    adapted = _image_model()
    loss = adaptation.batch_normalization_consistency_loss
    assert float(to_numpy(loss(adapted))) == 0.0
    for seed in range(2):
        adapted.predict(_data(seed=seed, shift=1.5), verbose=0)
    rng = np.random.default_rng(1)
    for layer in _mdbn_layers(adapted):
        for w in (layer.gamma, layer.beta):
            if w is not None:
                w.assign(w + rng.normal(0, 0.3, w.shape).astype("float32"))
    weighted = sum(
        (_transferability(m) * _affine_distance(m)).sum()
        for m in _mdbn_layers(adapted)
    )
    plain = sum(_affine_distance(m).sum() for m in _mdbn_layers(adapted))
    np.testing.assert_allclose(to_numpy(loss(adapted)), weighted, rtol=1e-5)
    np.testing.assert_allclose(
        to_numpy(loss(adapted, transferability=False)), plain, rtol=1e-5
    )
    alpha = _transferability(adapted.get_layer("bn_conv"))
    assert not np.allclose(alpha, 1.0)
    with pytest.raises(ValueError, match="`transferability` must be a bool"):
        loss(adapted, transferability=1)


class ConsistencyOnly(keras.Model):
    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        return adaptation.batch_normalization_consistency_loss(self)


def test_consistency_loss_gradient_in_fit():
    """One SGD step of `fit` on the loss alone (only the affine
    trainable): gamma <- gamma - lr * alpha * sign(gamma - gamma_s)."""
    inputs = keras.Input((4, 4, 3))
    h = keras.layers.Conv2D(4, 3)(inputs)
    h = layers.MomentumDecayBatchNormalization(name="bn")(h)
    h = keras.layers.Flatten()(h)
    model = ConsistencyOnly(inputs, keras.layers.Dense(2)(h))
    layer = model.get_layer("bn")
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, (8, 4, 4, 3)).astype("float32")
    model.predict(x, verbose=0)  # the source snapshot
    shift = np.array([0.3, -0.2, 0.1, -0.4], "float32")
    layer.gamma.assign(layer.gamma + shift)
    layer.beta.assign(layer.beta - shift)
    gamma, beta = to_numpy(layer.gamma), to_numpy(layer.beta)
    adaptation.train_only_normalization(model)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(x, epochs=1, batch_size=8, verbose=0)
    alpha = _transferability(layer)
    assert int(to_numpy(layer.adapted_batches)) == 2
    np.testing.assert_allclose(
        to_numpy(layer.gamma), gamma - 0.1 * alpha * np.sign(shift), 1e-5
    )
    np.testing.assert_allclose(
        to_numpy(layer.beta), beta + 0.1 * alpha * np.sign(shift), 1e-5
    )


@pytest.mark.parametrize("from_logits", [False, True])
def test_self_entropy_loss_matches_numpy(from_logits):
    rng = np.random.default_rng(2)
    logits = rng.normal(0.0, 3.0, (2, 3, 5, 4)).astype("float32")
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    p[0, :, 0, 0] = [1.0, 0.0, 0.0]  # 0 * log 0 is 0
    expected = np.mean(-np.sum(p * np.log(np.where(p > 0, p, 1.0)), axis=1))
    y = logits if from_logits else p
    if from_logits:
        expected = np.mean(
            -np.sum(
                np.exp(logits - np.log(np.exp(logits).sum(1, keepdims=True)))
                * (logits - np.log(np.exp(logits).sum(1, keepdims=True))),
                axis=1,
            )
        )
    value = adaptation.self_entropy_loss(y, from_logits=from_logits, axis=1)
    np.testing.assert_allclose(to_numpy(value), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="`axis` must be an int"):
        adaptation.self_entropy_loss(y, axis=1.0)
