"""PowerNormalization, UnifiedNormalization, RepBatchNormalization and
ProgressiveRepBN against NumPy references of the official modules
(`tests/references/transformer_norm_numpy.py`), over many compiled
training steps of a Keras model: outputs, input and parameter gradients
(through SGD on the input itself), and every state variable, including
the state the custom backward passes set; then inference. Also masks,
both layouts, gradient accumulation, the update counter, folding and bad
arguments."""

import warnings

import keras
import numpy as np
import pytest
from keras import ops

from keras_batchopt import layers
from keras_batchopt import optimizers
from tests.conftest import to_numpy
from tests.references import transformer_norm_numpy as ref

LR = 0.05
B, N, C = 6, 5, 8
# float32 layers against float64 references over up to 14 steps.
RTOL, ATOL = 2e-4, 2e-5


class DotLoss(keras.losses.Loss):
    """`sum(y_pred * dy)`: its gradient with respect to the output is the
    upstream gradient `dy`, passed as `y_true`."""

    def __init__(self):
        super().__init__(reduction="sum")

    def call(self, y_true, y_pred):
        return ops.sum(
            ops.reshape(y_true * y_pred, (ops.shape(y_pred)[0], -1)), 1
        )


class Harness(keras.Model):
    """The layer applied to a trainable input `x` times a per-sample scale
    (the model's input), so that SGD on `x` exposes the input gradient."""

    def __init__(self, layer, x0, mask, channels_first):
        super().__init__()
        self.norm = layer
        self.mask = mask
        self.channels_first = channels_first
        self.x = self.add_weight(
            shape=x0.shape,
            initializer=keras.initializers.Constant(x0),
            name="x",
        )

    def call(self, scale, training=False):
        x = self.x * ops.reshape(scale, (-1, 1, 1))
        if self.channels_first:
            x = ops.transpose(x, (0, 2, 1))
        mask = None if self.mask is None else ops.convert_to_tensor(self.mask)
        y = self.norm(x, training=training, mask=mask)
        if self.channels_first:
            y = ops.transpose(y, (0, 2, 1))
        # A new tensor, without the propagated mask (the loss is per
        # sample).
        return y + 0.0


def _mask(kind):
    if kind is None:
        return None
    mask = np.ones((B, N), bool)
    mask[1, 3:] = False
    mask[4, 1:] = False
    return mask


# name -> (layer factory (axis), reference factory, mask, steps, scales)
def _power(groups):
    return (
        lambda axis: layers.PowerNormalization(
            axis=axis, warmup_steps=3, groups=groups
        ),
        lambda: ref.PowerNormReference(C, warmup_iters=3, group_num=groups),
    )


def _unified(window, filtration, start=0):
    return (
        lambda axis: layers.UnifiedNormalization(
            axis=axis,
            window_size=window,
            warmup_steps=start + 2,
            outlier_filtration=filtration,
        ),
        lambda: ref.UnifiedNormReference(
            C,
            window_size=window,
            warmup_iters=start + 2,
            outlier_filtration=filtration,
        ),
    )


OUTLIER = [1.0] * 6 + [50.0] + [1.0] * 5
CLAMP = [1.0] * 4 + [40.0, 1.0, 1.0, 0.02, 0.02] + [1.0] * 3
CASES = {
    "power": (*_power(1), None, [1.0] * 8, 0),
    "power_groups_mask": (*_power(2), "pad", [1.0] * 8, 0),
    "unified": (*_unified(3, False), None, [1.0] * 10, 0),
    "unified_filtration_mask": (*_unified((3, 2), True), "pad", OUTLIER, 0),
    # Past step max(1000, warmup): the ratio r is clamped to [1/5, 5]; the
    # x40 and x0.02 batches reach both limits (filtration off, so they are
    # not skipped; moving either limit fails this case).
    "unified_clamp": (*_unified(2, False, 1000), None, CLAMP, 1000),
    "rep_bn": (
        lambda axis: layers.RepBatchNormalization(axis=axis),
        lambda: ref.RepBNReference(C),
        None,
        [1.0] * 6,
        0,
    ),
    "rep_bn_mask": (
        lambda axis: layers.RepBatchNormalization(axis=axis),
        lambda: ref.RepBNReference(C),
        "pad",
        [1.0] * 6,
        0,
    ),
    "progressive": (
        lambda axis: layers.ProgressiveRepBN(
            axis=axis, total_steps=5, warmup_steps=2
        ),
        lambda: ref.ProgressiveRepBNReference(C, warm=2, step=5),
        None,
        [1.0] * 10,
        0,
    ),
}

# Keras weight name -> reference attribute.
STATE = {
    "gamma": "gamma",
    "beta": "beta",
    "moving_variance": ("running_phi", "running_var", "moving_variance"),
    "moving_mean": "moving_mean",
    "gradient_ema": "ema_gz",
    "variance_window": "buffer_x2",
    "gradient_window": "buffer_gz",
    "iterations": "iterations",
    "skip_count": "skip_count",
    "alpha": "alpha",
    "layer_norm_gamma": "ln_gamma",
    "layer_norm_beta": "ln_beta",
}
GRADS = ("gamma", "beta", "alpha", "ln_gamma", "ln_beta")


def _reference_value(reference, name):
    names = STATE[name]
    for attr in (names,) if isinstance(names, str) else names:
        if hasattr(reference, attr):
            return np.asarray(getattr(reference, attr), "float64")
    raise AssertionError(f"no reference for {name}")


def _check_state(layer, reference, step):
    for weight in layer.weights:
        if weight.name == "steps":
            continue
        np.testing.assert_allclose(
            to_numpy(weight),
            _reference_value(reference, weight.name),
            RTOL,
            ATOL,
            err_msg=f"{weight.name} after step {step}",
        )


def _sgd(reference, grads):
    """The reference's parameters after Keras's SGD step."""
    for key in GRADS:
        if key not in grads:
            continue
        if key in ("gamma", "beta", "alpha") and hasattr(reference, "repbn"):
            target = reference.repbn
        else:
            target = reference
        setattr(target, key, getattr(target, key) - LR * grads[key])


# channels_first on one case per layer.
TRAJECTORIES = [(name, "channels_last") for name in sorted(CASES)] + [
    (name, "channels_first")
    for name in (
        "power_groups_mask",
        "unified_filtration_mask",
        "rep_bn_mask",
        "progressive",
    )
]


@pytest.mark.parametrize("name, layout", TRAJECTORIES)
def test_training_trajectory_matches_official(name, layout):
    factory, reference_factory, mask_kind, scales, start = CASES[name]
    rng = np.random.default_rng(7)
    x = rng.normal(0.5, 1.5, (B, N, C))
    mask = _mask(mask_kind)
    channels_first = layout == "channels_first"
    layer = factory(1 if channels_first else -1)
    model = Harness(layer, x.astype("float32"), mask, channels_first)
    # XLA on TensorFlow and JAX. In TensorFlow's non-XLA graph mode this
    # harness (an input that is itself a variable the same step updates)
    # gets a wrong first step in about a third of fresh models, with
    # Keras's own BatchNormalization as much as with these layers: the
    # forward then reads `gamma` after the optimizer's update of it. It
    # goes away with Grappler's `dependency_optimization` off, and does
    # not show in a Dense-BN-Dense model or with plain `tf.Variable`s and
    # `assign_sub`; the layers' gradients in eager mode and under XLA are
    # right.
    model.compile(
        optimizer=keras.optimizers.SGD(LR),
        loss=DotLoss(),
        jit_compile=keras.backend.backend() != "torch",
    )
    reference = reference_factory()
    model(np.ones((B, 1), "float32"))
    if start:
        layer.iterations.assign(start)
        reference.iterations = start
    for step, s in enumerate(scales):
        dy = rng.normal(size=(B, N, C))
        model.train_on_batch(np.full((B, 1), s, "float32"), dy)
        reference.forward(x * s, mask)
        grads = reference.backward(dy)
        x = x - LR * s * grads["x"]
        _sgd(reference, grads)
        np.testing.assert_allclose(
            to_numpy(model.x), x, RTOL, ATOL, err_msg=f"x after {step}"
        )
        _check_state(layer, reference, step)
    if name.startswith("unified_filtration"):
        assert 0 < int(to_numpy(layer.skip_count)) < len(scales)
    if name == "progressive":
        assert float(to_numpy(layer.steps)) == len(scales)
        assert layer.lambda_value() == 0.0
    model.x.assign(x.astype("float32"))
    expected = reference.forward(x, mask, training=False)
    y = model.predict(np.ones((B, 1), "float32"), batch_size=B, verbose=0)
    np.testing.assert_allclose(y, expected, RTOL, ATOL)


def test_progressive_counts_optimizer_updates_not_calls():
    """With gradient accumulation over 3 micro-batches, 6 training batches
    are 2 updates; forward calls in training mode outside `fit` count
    nothing."""
    layer = layers.ProgressiveRepBN(total_steps=4)
    inputs = keras.Input((N, C))
    model = keras.Model(inputs, keras.layers.Dense(2)(layer(inputs)))
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, gradient_accumulation_steps=3),
        loss="mse",
    )
    x = np.random.default_rng(0).normal(size=(6 * 4, N, C))
    y = np.zeros((6 * 4, N, 2))
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for _ in range(3):
        model(x[:4], training=True)
    assert float(to_numpy(layer.steps)) == 2.0
    assert layer.lambda_value() == pytest.approx(0.5)


def test_progressive_warns_when_unfinished():
    layer = layers.ProgressiveRepBN(total_steps=10)
    layer.build((None, N, C))
    layer.steps.assign(4.0)
    x = np.ones((2, N, C), "float32")
    with pytest.warns(UserWarning, match="lambda=0.6"):
        layer(x, training=False)
    blend = layers.ProgressiveRepBN(total_steps=10, inference_mode="blend")
    blend.build((None, N, C))
    blend.steps.assign(4.0)
    blend(x, training=False)  # no warning: inference is the blend


@pytest.mark.parametrize("steps, warns", [(4.0, True), (10.0, False)])
def test_progressive_warns_in_compiled_predict(steps, warns):
    """`predict` compiles the inference (traced variables on JAX, whose
    check runs with the value when the compiled function does)."""
    layer = layers.ProgressiveRepBN(total_steps=10)
    model = keras.Sequential([keras.Input((N, C)), layer])
    model.compile(jit_compile=True)
    layer.steps.assign(steps)
    x = np.ones((2, N, C), "float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.predict(x, verbose=0)
        model.predict(x, verbose=0)  # once
    messages = [str(w.message) for w in caught if "lambda=" in str(w.message)]
    assert len(messages) == int(warns)
    if warns:
        assert "lambda=0.6" in messages[0]


def _fold_model(norm, variant="dense"):
    """ "dense": Dense -> norm -> Dense (merges into the Dense before) ->
    norm -> Dense (into the Dense after); "attention": the input -> norm ->
    MultiHeadAttention (into its query, key and value projections);
    "residual": a norm whose output meets the input in an Add (nothing to
    merge into: a ChannelAffine)."""
    inputs = keras.Input((N, C))
    if variant == "attention":
        h = norm()(inputs)
        h = keras.layers.MultiHeadAttention(2, 4)(h, h)
    elif variant == "residual":
        h = keras.layers.Add()([inputs, norm()(inputs)])
    else:
        h = norm()(keras.layers.Dense(C)(inputs))
    h = keras.layers.Dense(C, activation="relu")(h)
    out = keras.layers.Dense(3)(norm()(h))
    return keras.Model(inputs, out)


FOLDABLE = {
    "rep_bn": layers.RepBatchNormalization,
    "unified": lambda: layers.UnifiedNormalization(warmup_steps=2),
    "batch_norm": lambda: keras.layers.BatchNormalization(),
    "progressive": lambda: layers.ProgressiveRepBN(total_steps=2),
}


@pytest.mark.parametrize("variant", ["dense", "attention", "residual"])
@pytest.mark.parametrize("name", sorted(FOLDABLE))
def test_fold_normalization_keeps_outputs(name, variant, tmp_path):
    model = _fold_model(FOLDABLE[name], variant)
    model.compile("adam", "mse")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(32, N, C)).astype("float32")
    model.fit(x, rng.normal(size=(32, N, 3)), batch_size=8, verbose=0)
    folded = layers.fold_normalization(model)
    kinds = [type(layer).__name__ for layer in folded.layers]
    assert "FoldedIdentity" in kinds
    assert kinds.count("ChannelAffine") == (variant == "residual")
    assert not any(
        k in kinds
        for k in (
            "RepBatchNormalization",
            "UnifiedNormalization",
            "BatchNormalization",
            "ProgressiveRepBN",
        )
    )
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(
        folded.predict(x, verbose=0), expected, 1e-4, 1e-5
    )
    path = tmp_path / "folded.keras"
    folded.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), expected, 1e-4, 1e-5
    )


@pytest.mark.parametrize("order", ["pre_norm", "post_norm"])
def test_fold_with_padding_masks(order):
    """Masked token models: Embedding(mask_zero) -> norm -> Dense folds into
    the Dense after; Embedding -> Dense -> norm into the Dense before."""
    tokens = keras.Input((N,), dtype="int32")
    h = keras.layers.Embedding(20, C, mask_zero=True)(tokens)
    if order == "post_norm":
        h = layers.RepBatchNormalization()(keras.layers.Dense(C)(h))
    else:
        h = layers.UnifiedNormalization(warmup_steps=2)(h)
    model = keras.Model(tokens, keras.layers.Dense(3)(h))
    model.compile("adam", "mse")
    rng = np.random.default_rng(4)
    x = rng.integers(0, 20, (16, N))
    x[:, -2:] = 0
    model.fit(x, rng.normal(size=(16, N, 3)), batch_size=8, verbose=0)
    folded = layers.fold_normalization(model)
    kinds = [type(layer).__name__ for layer in folded.layers]
    assert "FoldedIdentity" in kinds and "ChannelAffine" not in kinds
    np.testing.assert_allclose(
        folded.predict(x, verbose=0), model.predict(x, verbose=0), 1e-4, 1e-5
    )


def test_fold_refuses_unfinished_progressive():
    model = _fold_model(lambda: layers.ProgressiveRepBN(total_steps=100))
    model.compile("adam", "mse")
    x = np.zeros((8, N, C), "float32")
    model.fit(x, np.zeros((8, N, 3)), batch_size=8, verbose=0)
    with pytest.raises(ValueError, match="lambda=0.99"):
        layers.fold_normalization(model)
    folded = layers.fold_normalization(model, allow_unfinished=True)
    kinds = [type(layer).__name__ for layer in folded.layers]
    assert "ProgressiveRepBN" not in kinds


def test_fold_rejects_subclassed_model():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="Argument `model`"):
        layers.fold_normalization(Net())


@pytest.mark.parametrize(
    "factory, match",
    [
        (lambda: layers.PowerNormalization(alpha_forward=1.0), "alpha_forward"),
        (lambda: layers.PowerNormalization(alpha_backward=-0.1), "alpha_bac"),
        (lambda: layers.PowerNormalization(warmup_steps=-1), "warmup_steps"),
        (lambda: layers.PowerNormalization(groups=0), "groups"),
        (lambda: layers.PowerNormalization(epsilon=0.0), "epsilon"),
        (lambda: layers.UnifiedNormalization(window_size=0), "window_size"),
        (lambda: layers.UnifiedNormalization(window_size=(2,)), "window_size"),
        (lambda: layers.UnifiedNormalization(momentum=1.5), "momentum"),
        (lambda: layers.RepBatchNormalization(momentum=1.0), "momentum"),
        (lambda: layers.ProgressiveRepBN(total_steps=0), "total_steps"),
        (lambda: layers.ProgressiveRepBN(initial_ratio=0.0), "initial_ratio"),
        (lambda: layers.ProgressiveRepBN(inference_mode="ln"), "inference_m"),
    ],
)
def test_bad_arguments(factory, match):
    with pytest.raises(ValueError, match=f"Argument `{match}"):
        factory()


def test_groups_must_divide_channels():
    layer = layers.PowerNormalization(groups=3)
    with pytest.raises(ValueError, match="Argument `groups` must be a divisor"):
        layer.build((None, N, C))


OPTIMIZERS = {
    "Adan": lambda: optimizers.Adan(1e-3),
    "Lamb": lambda: optimizers.Lamb(1e-3),
    "Lars": lambda: optimizers.Lars(1e-3),
    "SGDSaI": lambda: optimizers.SGDSaI(1e-3),
    "SinkGD": lambda: optimizers.SinkGD(1e-3),
    "AdaGradNorm": lambda: optimizers.AdaGradNorm(1e-3),
    "Adan_ema": lambda: optimizers.Adan(1e-3, use_ema=True),
    "AdamW": lambda: keras.optimizers.AdamW(1e-3),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_backward_state_with_every_optimizer(name):
    """The backward state is assigned, never descended on, by each of our
    optimizers (their fast paths included, and with EMA, which skips it),
    and by Keras's AdamW: after
    3 updates the update counter reads 3 and the gradient statistics
    moved."""
    inputs = keras.Input((N, C))
    power = layers.PowerNormalization(warmup_steps=1)
    progressive = layers.ProgressiveRepBN(total_steps=10)
    h = progressive(power(keras.layers.Dense(C)(inputs)))
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    model.compile(optimizer=OPTIMIZERS[name](), loss="mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, N, C)).astype("float32")
    model.fit(x, rng.normal(size=(12, N, 2)), batch_size=4, verbose=0)
    assert float(to_numpy(progressive.steps)) == 3.0
    ema = to_numpy(power.gradient_ema)
    assert np.isfinite(ema).all() and np.abs(ema).max() > 0
    for weight in model.weights:
        assert np.isfinite(to_numpy(weight)).all(), weight.path
