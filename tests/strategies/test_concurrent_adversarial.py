"""ConAdv's training step against a NumPy reference of the stale-weights
adversarial update, and its Keras contract."""

import keras
import numpy as np
import pytest

import keras_batchopt
from tests.conftest import BACKEND
from tests.references import conadv_numpy as ref

enable = keras_batchopt.strategies.enable_concurrent_adversarial_training
N, D, K = 8, 5, 3


def _data(steps, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (steps * N, D))
    y = rng.integers(0, K, steps * N)
    return x, y


def _model(w, b, jit_compile="auto", **kwargs):
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(K)])
    model.set_weights([w.astype("float32"), b.astype("float32")])
    enable(model, **kwargs)
    model.compile(
        keras.optimizers.SGD(1.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def _start(seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (D, K)), rng.normal(0, 1, K)


JIT = [False, True] if BACKEND == "tensorflow" else ["auto"]


@pytest.mark.parametrize("jit_compile", JIT)
def test_fit_follows_the_stale_weights_reference(jit_compile):
    steps, eps, wc, wa = 3, 0.3, 1.0, 0.5
    x, y = _data(steps)
    w, b = _start()
    model = _model(
        w, b, jit_compile, epsilon=eps, clean_weight=wc, adversarial_weight=wa
    )
    # Two epochs: the stale weights survive fit's metric reset.
    model.fit(x, y, batch_size=N, epochs=2, shuffle=False, verbose=0)
    batches = [
        (x[i * N : (i + 1) * N], y[i * N : (i + 1) * N]) for i in range(steps)
    ]
    trajectory = ref.train(batches * 2, w, b, 1.0, eps, wc, wa)
    got_w, got_b = model.get_weights()
    want_w, want_b = trajectory[-1]
    np.testing.assert_allclose(got_w, want_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_b, want_b, rtol=1e-5, atol=1e-6)
    for variant in ref.VARIANTS[1:]:
        wrong_w, _ = ref.train(batches * 2, w, b, 1.0, eps, wc, wa, variant)[-1]
        assert not np.allclose(got_w, wrong_w, atol=1e-4), variant


def test_zero_adversarial_weight_is_plain_training_and_losses_add():
    x, y = _data(1)
    w, b = _start()
    model = _model(w, b, epsilon=0.3, adversarial_weight=0.0)
    model.fit(x, y, batch_size=N, shuffle=False, verbose=0)
    plain = keras.Sequential([keras.Input((D,)), keras.layers.Dense(K)])
    plain.set_weights([w.astype("float32"), b.astype("float32")])
    plain.compile(
        keras.optimizers.SGD(1.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    plain.fit(x, y, batch_size=N, shuffle=False, verbose=0)
    for a, p in zip(model.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, p, rtol=1e-6, atol=1e-7)


def test_resume_after_save_and_load(tmp_path):
    steps, eps = 3, 0.3
    x, y = _data(steps + 1)
    w, b = _start()
    model = _model(w, b, epsilon=eps)
    model.fit(
        x[: steps * N], y[: steps * N], batch_size=N, shuffle=False, verbose=0
    )
    path = str(tmp_path / "conadv.keras")
    model.save(path)
    loaded = enable(keras.models.load_model(path), epsilon=eps)
    # The stale weights are not saved: the resumed step uses theta_t, as
    # the first step does (documented).
    loaded.fit(x[steps * N :], y[steps * N :], batch_size=N, verbose=0)
    start_w, start_b = [v.astype("float64") for v in model.get_weights()]
    want = ref.train(
        [(x[steps * N :], y[steps * N :])], start_w, start_b, 1.0, eps
    )
    np.testing.assert_allclose(
        loaded.get_weights()[0], want[-1][0], rtol=1e-5, atol=1e-6
    )
    assert len(loaded.weights) == 2


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"epsilon": -0.1}, "epsilon"),
        ({"clean_weight": -1.0}, "clean_weight"),
        ({"adversarial_weight": -1.0}, "adversarial_weight"),
        ({"epsilon": float("nan")}, "epsilon"),
    ],
)
def test_bad_arguments_name_argument_range_and_value(kwargs, name):
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(K)])
    with pytest.raises(ValueError, match=f"`{name}` must be .*Received"):
        enable(model, **kwargs)


def test_composes_with_lars_warmup_and_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    x, y = _data(4)
    model = keras.Sequential(
        [
            keras.Input((D,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(K, dtype="float32"),
        ]
    )
    enable(model, epsilon=0.05)
    schedule = keras_batchopt.schedules.GradualWarmup(
        keras.optimizers.schedules.CosineDecay(1.0, 8), warmup_steps=2
    )
    model.compile(
        keras.optimizers.LossScaleOptimizer(
            keras_batchopt.optimizers.Lars(schedule)
        ),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x, y, batch_size=N, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert set(history.history) == {"loss", "accuracy"}
    assert model.predict(x, verbose=0).shape == (len(x), K)
    assert np.isfinite(model.evaluate(x, y, verbose=0)[0])


def test_train_on_batch_with_numpy_and_integer_inputs():
    x, y = _data(1)
    w, b = _start()
    model = _model(w, b, epsilon=0.3)
    pixels = np.round(np.abs(x) * 10).astype("uint8")
    loss = model.train_on_batch(pixels, y)
    want = ref.train([(pixels.astype("float64"), y)], w, b, 1.0, 0.3)
    np.testing.assert_allclose(
        model.get_weights()[0], want[-1][0], rtol=1e-5, atol=1e-6
    )
    assert np.isfinite(loss)
    # float32 NumPy inputs (torch's train_on_batch passes them as they are)
    model = _model(w, b, epsilon=0.3)
    model.train_on_batch(x.astype("float32"), y)
    want = ref.train([(x, y)], w, b, 1.0, 0.3)
    np.testing.assert_allclose(
        model.get_weights()[0], want[-1][0], rtol=1e-5, atol=1e-6
    )
