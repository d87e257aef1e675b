"""ScaledResidual and scale_residuals: the factor of each mode, the Keras
layer contract and the model rewrite."""

import math

import keras
import numpy as np
import pytest

import keras_batchopt
from keras_batchopt.layers import ScaledResidual

to_numpy = keras.ops.convert_to_numpy


def _pair(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(3, 5)).astype("float32") for _ in range(2)]


@pytest.mark.parametrize(
    "scale, factor",
    [
        ("inverse_depth", 1 / 16),
        ("inverse_sqrt_depth", 1 / 4),
        (0.3, 0.3),
        ("skipinit", 0.0),
    ],
)
@pytest.mark.parametrize("branch_index", [0, 1])
def test_output_is_shortcut_plus_scaled_branch(scale, factor, branch_index):
    shortcut, branch = _pair()
    inputs = [shortcut, branch] if branch_index == 1 else [branch, shortcut]
    layer = ScaledResidual(scale, depth=16, branch_index=branch_index)
    np.testing.assert_allclose(
        to_numpy(layer(inputs)), shortcut + factor * branch, rtol=1e-6
    )


@pytest.mark.parametrize(
    "scale, total",
    [
        ("inverse_depth", (1 + 1 / 12) ** 12),  # below e at any depth
        ("inverse_sqrt_depth", (1 + 1 / math.sqrt(12)) ** 12),
        (1.0, 2.0**12),  # every one of the 2**n paths counts fully
    ],
)
def test_identity_branches_sum_the_paths_as_the_expansion_says(scale, total):
    # With f_l = identity, a tower of n blocks x + a f_l(x) is
    # sum_k C(n, k) a**k x = (1 + a)**n x: the Residual Expansion Theorem's
    # path count.
    x = inputs = keras.Input((2,))
    for _ in range(12):
        x = ScaledResidual(scale, depth=12)([x, x])
    model = keras.Model(inputs, x)
    out = to_numpy(model(np.ones((1, 2), "float32")))
    np.testing.assert_allclose(out, np.full((1, 2), total), rtol=1e-5)
    assert total < math.e or scale != "inverse_depth"


def _residual_mlp(depth=3, width=8):
    x = inputs = keras.Input((4,))
    x = keras.layers.Dense(width, name="stem")(x)
    for _ in range(depth):
        branch = keras.layers.Dense(width, activation="relu")(x)
        x = keras.layers.Add()([x, keras.layers.Dense(width)(branch)])
    projected = keras.layers.Dense(3, name="projection")(x)  # shortcut
    deep = keras.layers.Dense(3)(keras.layers.Dense(3)(x))
    x = keras.layers.Add()([deep, projected])  # [branch, shortcut]
    return keras.Model(inputs, x)


def test_scale_residuals_finds_the_branches_and_copies_weights():
    model = _residual_mlp()
    scaled = keras_batchopt.adaptation.scale_residuals(model)
    layers = [
        layer for layer in scaled.layers if isinstance(layer, ScaledResidual)
    ]
    assert [layer.branch_index for layer in layers] == [1, 1, 1, 0]
    assert all(layer.factor == 0.25 for layer in layers)
    x = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    same = keras_batchopt.adaptation.scale_residuals(model, scale=1.0)
    np.testing.assert_allclose(to_numpy(same(x)), to_numpy(model(x)), rtol=1e-6)
    # Scale 0: every block is the identity and the last Add keeps its
    # projection shortcut: stem then projection.
    zero = keras_batchopt.adaptation.scale_residuals(model, scale=0.0)
    stem, projection = model.get_layer("stem"), model.get_layer("projection")
    expected = to_numpy(projection(stem(x)))
    np.testing.assert_allclose(to_numpy(zero(x)), expected, rtol=1e-6)


def test_fit_save_load_and_mixed_precision(tmp_path):
    x = np.random.default_rng(2).normal(size=(16, 4)).astype("float32")
    y = np.random.default_rng(3).normal(size=(16, 3)).astype("float32")
    model = keras_batchopt.adaptation.scale_residuals(
        _residual_mlp(), scale="skipinit"
    )
    alphas = [w for w in model.weights if w.name == "alpha"]
    assert len(alphas) == 4 and all(float(to_numpy(a)) == 0 for a in alphas)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert all(float(to_numpy(a)) != 0 for a in alphas)  # trained
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    layer = restored.get_layer(model.layers[-1].name)
    assert layer.get_config() == model.layers[-1].get_config()
    np.testing.assert_allclose(
        to_numpy(restored.predict(x, verbose=0)),
        to_numpy(model.predict(x, verbose=0)),
        rtol=1e-6,
    )
    keras.mixed_precision.set_global_policy("mixed_float16")
    layer = ScaledResidual("skipinit")
    out = layer([np.ones((2, 3), "float16"), np.ones((2, 3), "float16")])
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert layer.alpha.dtype == "float32"


def test_bad_arguments_raise_with_the_value():
    with pytest.raises(ValueError, match="scale='depth'"):
        ScaledResidual("depth", depth=3)
    with pytest.raises(ValueError, match="depth=None"):
        ScaledResidual("inverse_depth")
    with pytest.raises(ValueError, match="branch_index=2"):
        ScaledResidual(0.5, branch_index=2)
    with pytest.raises(ValueError, match="two tensors"):
        ScaledResidual(0.5)(np.ones((2, 3), "float32"))
    inputs = keras.Input((3,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ValueError, match="Add layers"):
        keras_batchopt.adaptation.scale_residuals(plain)
