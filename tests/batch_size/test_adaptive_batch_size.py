"""AdAdaGrad's batch-size tests and the growing-batch pipeline: statistics
against NumPy, per-sample gradients against one-sample training steps, and
the batch growing during fit on real data, on every backend."""

import keras
import numpy as np
import pytest

from keras_batchopt import batch_size as bs
from keras_batchopt import schedules
from tests.conftest import BACKEND
from tests.conftest import to_numpy
from tests.references import adadagrad_numpy as ref

CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def assert_clear_error(call, argument):
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert f"`{argument}`" in message, message
    assert "Received:" in message, message


def softmax_regression(features=5, classes=3, seed=0):
    rng = np.random.RandomState(seed)
    model = keras.Sequential(
        [keras.Input((features,)), keras.layers.Dense(classes)]
    )
    model.set_weights(
        [
            rng.randn(features, classes).astype("float32"),
            rng.randn(classes).astype("float32") * 0.1,
        ]
    )
    x = rng.randn(40, features).astype("float32")
    y = rng.randint(0, classes, 40)
    return model, x, y


@pytest.mark.parametrize("scope", ["per_variable", "global"])
def test_statistics_match_numpy_on_softmax_regression(scope):
    """Closed-form per-sample gradients in NumPy (float64) against the
    backend's vectorized per-sample gradients and statistics."""
    model, x, y = softmax_regression()
    got = bs.gradient_statistics(model, x, y, loss=CE, scope=scope)
    w, b = [w.astype("float64") for w in model.get_weights()]
    grads = ref.softmax_regression_per_sample_grads(w, b, x, y)
    want = ref.statistics(grads, scope)
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=2e-5), key


def test_scopes_differ_and_each_statistic_is_distinct():
    """Guards against a reference that cannot fail: the two scopes give
    different inner-product and orthogonal variances on this data, and the
    biased variance (b instead of b - 1) is off by b / (b - 1)."""
    model, x, y = softmax_regression()
    per_var = bs.gradient_statistics(model, x, y, loss=CE)
    overall = bs.gradient_statistics(model, x, y, loss=CE, scope="global")
    assert per_var["sq_norm"] == pytest.approx(overall["sq_norm"], rel=1e-6)
    assert per_var["variance_l1"] == pytest.approx(
        overall["variance_l1"], rel=1e-6
    )
    for key in ("inner_product_var", "orthogonal_var"):
        assert abs(per_var[key] / overall[key] - 1) > 1e-2, key
    w, b = [w.astype("float64") for w in model.get_weights()]
    grads = ref.softmax_regression_per_sample_grads(w, b, x, y)
    biased = sum(g.reshape(40, -1).var(axis=0).sum() for g in grads)
    assert abs(per_var["variance_l1"] / biased - 40 / 39) < 1e-5


def _one_sample_gradients(model, x, y):
    """Each sample's gradient from an ordinary Keras training step: SGD with
    learning rate 1 on a batch of one moves the weights by -g."""
    grads = []
    for i in range(len(x)):
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        clone.compile(optimizer=keras.optimizers.SGD(1.0), loss=CE)
        before = clone.get_weights()
        clone.train_on_batch(x[i : i + 1], y[i : i + 1])
        grads.append([b - a for b, a in zip(before, clone.get_weights())])
    return [np.stack(g) for g in zip(*grads)]


def test_per_sample_gradients_of_a_cnn_match_one_sample_steps():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(3, 3, activation="tanh"),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(4),
        ]
    )
    rng = np.random.RandomState(0)
    x = rng.randn(12, 6, 6, 2).astype("float32")
    y = rng.randint(0, 4, 12)
    grads = _one_sample_gradients(model, x, y)
    for scope in ("per_variable", "global"):
        want = ref.statistics(grads, scope)
        got = bs.gradient_statistics(model, x, y, loss=CE, scope=scope)
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-4), key


def test_tests_from_statistics():
    s = dict(
        sq_norm=0.5, variance_l1=3.0, inner_product_var=0.2, orthogonal_var=4
    )
    assert bs.norm_test(s, eta=0.1) == ref.norm_test(s, 0.1) == 600
    assert bs.inner_product_test(s, theta=0.2) == ref.inner_product_test(s, 0.2)
    assert bs.augmented_inner_product_test(s, 0.2, 0.3) == ref.augmented_test(
        s, 0.2, 0.3
    )
    assert bs.orthogonality_test(s, nu=1.0) == 8
    zero = dict(s, sq_norm=0.0)
    assert bs.norm_test(zero) is None
    assert bs.augmented_inner_product_test(zero) is None


# ------------------------------------------------------------------ dataset


def test_dataset_stream_covers_every_sample_once_per_pass():
    x = np.arange(50)
    data = bs.AdaptiveBatchDataset(x, x * 2, batch_size=7, seed=3)
    seen = []
    sizes = [7, 7, 7, 13, 13, 3, 20, 30]
    for size in sizes:
        data.batch_size = size
        xb, yb = data._batch()
        assert len(xb) == size
        np.testing.assert_array_equal(yb, xb * 2)
        seen.extend(xb.tolist())
    assert sorted(seen[:50]) == list(range(50))
    assert sorted(seen[50:100]) == list(range(50))
    assert data.samples_produced == sum(sizes)


def test_dataset_structures_and_sample_weights():
    x = {"a": np.zeros((9, 2)), "b": np.ones((9, 1))}
    data = bs.AdaptiveBatchDataset(
        x, np.arange(9), sample_weight=np.ones(9), batch_size=4, shuffle=False
    )
    xb, yb, sw = data._batch()
    assert xb["a"].shape == (4, 2) and list(yb) == [0, 1, 2, 3]
    assert sw.shape == (4,)
    assert data.num_batches == 3


def _classifier(inputs=64, classes=10):
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(classes),
        ]
    )


def _digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype("float32"), y.astype("int32")


def test_batch_grows_mid_epoch_in_fit():
    """Sizes set between steps reach the very next trained batch."""
    x, y = _digits()
    data = bs.AdaptiveBatchDataset(x, y, batch_size=8, seed=0)
    model = _classifier()
    model.compile(optimizer="adam", loss=CE)
    model.fit(x[:8], y[:8], verbose=0)  # build: fit peeks no batch
    sizes = []

    class Grow(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            trained = data.pending.popleft()
            sizes.append(len(trained[0]))
            if batch == 4:
                data.batch_size = 24

    model.fit(
        data, epochs=1, steps_per_epoch=None, callbacks=[Grow()], verbose=0
    )
    # No backend reads ahead (tf.data's injected prefetch is off), so the
    # new size reaches the very next step on every backend, however loaded
    # the machine is.
    assert sizes[:5] == [8] * 5
    assert set(sizes[5:]) == {24}
    assert len(sizes) == data.num_batches == int(np.ceil(len(x) / 8))


def test_batch_actually_grows_on_digits():
    x, y = _digits()
    data = bs.AdaptiveBatchDataset(
        x, y, batch_size=8, max_batch_size=512, seed=0
    )
    model = _classifier()
    model.compile(optimizer=keras.optimizers.Adagrad(0.05), loss=CE)
    # Build first: JAX's and torch's first `fit` peek one batch to build
    # the optimizer, and that batch (dropped at the epoch's start) is
    # produced but never trained on.
    model.fit(x[:8], y[:8], verbose=0)
    grow = bs.AdaptiveBatchSize(
        data,
        test="augmented_inner_product",
        theta=0.5,
        nu=0.5,
        test_interval=5,
        max_test_batch_size=64,
        batch_size_multiple=8,
    )
    history = model.fit(data, epochs=2, callbacks=[grow], verbose=0)
    record = grow.history
    assert len(record) >= 10
    sizes = [r["new_batch_size"] for r in record]
    assert sizes == sorted(sizes), "the batch must never shrink"
    assert sizes[-1] > 8 and sizes[-1] <= 512
    assert all(s % 8 == 0 for s in sizes)
    assert grow.samples_seen == data.samples_produced - sum(
        len(b[0]) for b in data.pending
    )
    for r in record:
        if r["proposed"] is not None:
            expect = min(max(r["batch_size"], -(-r["proposed"] // 8) * 8), 512)
            assert r["new_batch_size"] == expect
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_callback_leaves_training_unchanged_when_nothing_grows():
    """Running the tests (with JAX's state sync) must not disturb fit: a
    test that never asks for more gives the same weights as no callback."""
    x, y = _digits()
    x, y = x[:256], y[:256]
    weights = None
    results = []
    for use in (False, True):
        keras.utils.set_random_seed(0)
        model = _classifier()
        if weights is None:
            weights = model.get_weights()
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=CE)
        data = bs.AdaptiveBatchDataset(x, y, batch_size=16, seed=0)
        grow = bs.AdaptiveBatchSize(data, eta=1e6, test_interval=2)
        model.fit(data, epochs=2, callbacks=[grow] if use else [], verbose=0)
        results.append(model.get_weights())
        if use:
            assert len(grow.history) == 16
            assert all(r["new_batch_size"] == 16 for r in grow.history)
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_learning_rate_follows_samples_seen():
    x, y = _digits()
    data = bs.AdaptiveBatchDataset(x, y, batch_size=10, seed=0)
    schedule = schedules.WarmupStableDecay(
        0.1, warmup_steps=10, decay_steps=50, stable_steps=20
    )
    model = _classifier()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=CE)
    grow = bs.AdaptiveBatchSize(
        data, eta=1e6, test_interval=1000, learning_rate_schedule=schedule
    )
    used, sizes = [], []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            used.append(float(to_numpy(self.model.optimizer.learning_rate)))

        def on_train_batch_end(self, batch, logs=None):
            sizes.append(logs["batch_size"])  # written by AdaptiveBatchSize
            if batch == 7:
                data.batch_size = 30

    model.fit(
        data,
        epochs=1,
        steps_per_epoch=20,
        callbacks=[grow, Record()],
        verbose=0,
    )
    assert sizes[:8] == [10] * 8 and sizes[-1] == 30
    seen = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    want = [float(to_numpy(schedule(s / 10))) for s in seen]
    np.testing.assert_allclose(used, want, rtol=1e-6)
    assert grow.samples_seen == sum(sizes)


def test_learning_rate_schedule_reaches_the_update():
    """A schedule that drops to 0 after 40 samples freezes the weights."""
    x, y = _digits()
    data = bs.AdaptiveBatchDataset(x, y, batch_size=10, seed=0)

    def schedule(step):
        return 0.1 if step < 4 else 0.0

    model = _classifier()
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=CE)
    grow = bs.AdaptiveBatchSize(
        data, eta=1e6, test_interval=1000, learning_rate_schedule=schedule
    )
    model.fit(data, epochs=1, steps_per_epoch=4, callbacks=[grow], verbose=0)
    frozen = model.get_weights()
    model.fit(data, epochs=1, steps_per_epoch=3, callbacks=[grow], verbose=0)
    for a, b in zip(frozen, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_max_samples_stops_training():
    x, y = _digits()
    data = bs.AdaptiveBatchDataset(x, y, batch_size=16, seed=0)
    model = _classifier()
    model.compile(optimizer="adam", loss=CE)
    grow = bs.AdaptiveBatchSize(data, max_samples=100, test_interval=1000)
    model.fit(data, epochs=3, callbacks=[grow], verbose=0)
    assert grow.samples_seen == 112  # 7 batches of 16


def test_steps_per_execution_counts_every_step():
    x, y = _digits()
    data = bs.AdaptiveBatchDataset(x, y, batch_size=16, seed=0)
    model = _classifier()
    model.compile(optimizer="adam", loss=CE, steps_per_execution=4)
    grow = bs.AdaptiveBatchSize(data, eta=1e6, test_interval=6)
    if BACKEND == "torch":
        # Keras's torch trainer runs one step per execution only.
        with pytest.raises(ValueError, match="steps_per_execution"):
            model.fit(data, epochs=1, steps_per_epoch=24, verbose=0)
        return
    model.fit(data, epochs=1, steps_per_epoch=24, callbacks=[grow], verbose=0)
    assert grow.samples_seen == 24 * 16
    assert [r["step"] for r in grow.history] == [6, 12, 18, 24]


def test_callback_with_another_input_is_reported():
    x, y = _digits()
    data = bs.AdaptiveBatchDataset(x, y, batch_size=16)
    model = _classifier()
    model.compile(optimizer="adam", loss=CE)
    grow = bs.AdaptiveBatchSize(data)
    with pytest.raises(ValueError, match="passed to fit"):
        model.fit(x, y, epochs=1, callbacks=[grow], verbose=0)


def test_schedule_optimizer_conflict_is_reported():
    x, y = _digits()
    data = bs.AdaptiveBatchDataset(x, y, batch_size=16)
    model = _classifier()
    model.compile(
        optimizer=keras.optimizers.SGD(
            keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
        ),
        loss=CE,
    )
    grow = bs.AdaptiveBatchSize(data, learning_rate_schedule=lambda s: 0.1)
    with pytest.raises(ValueError, match="learning_rate_schedule"):
        model.fit(data, epochs=1, callbacks=[grow], verbose=0)


@pytest.mark.parametrize(
    "call,argument",
    [
        (lambda d: bs.AdaptiveBatchSize(d, test="mean"), "test"),
        (lambda d: bs.AdaptiveBatchSize(d, eta=0), "eta"),
        (lambda d: bs.AdaptiveBatchSize(d, theta=-1.0), "theta"),
        (lambda d: bs.AdaptiveBatchSize(d, test_interval=0), "test_interval"),
        (
            lambda d: bs.AdaptiveBatchSize(d, max_test_batch_size=1),
            "max_test_batch_size",
        ),
        (
            lambda d: bs.AdaptiveBatchSize(d, inner_product_scope="layer"),
            "inner_product_scope",
        ),
        (lambda d: bs.AdaptiveBatchSize(np.zeros(3)), "dataset"),
        (
            lambda d: bs.AdaptiveBatchDataset(np.zeros(3), batch_size=0),
            "batch_size",
        ),
        (
            lambda d: bs.AdaptiveBatchDataset(
                np.zeros(9), batch_size=4, max_batch_size=2
            ),
            "max_batch_size",
        ),
        (
            lambda d: bs.AdaptiveBatchDataset(np.zeros(3), np.zeros(4)),
            "x",
        ),
        (lambda d: setattr(d, "batch_size", 10**6), "batch_size"),
        (
            lambda d: bs.gradient_statistics(
                _classifier(), np.zeros((1, 64)), np.zeros(1), loss=CE
            ),
            "x",
        ),
        (
            lambda d: bs.gradient_statistics(
                _classifier(), np.zeros((4, 64)), np.zeros(4)
            ),
            "loss",
        ),
    ],
)
def test_bad_arguments_raise_clear_errors(call, argument):
    data = bs.AdaptiveBatchDataset(np.zeros((20, 2)), np.zeros(20))
    assert_clear_error(lambda: call(data), argument)


@pytest.mark.parametrize("variant", sorted(ref.STATISTICS_VARIANTS))
def test_statistics_oracle_detects_each_perturbation(variant):
    """Each plausible mistake moves a statistic by > 100x the tolerance
    (rel 2e-5) used against the backend."""
    model, x, y = softmax_regression()
    w, b = [w.astype("float64") for w in model.get_weights()]
    grads = ref.softmax_regression_per_sample_grads(w, b, x, y)
    good = ref.statistics(grads)
    bad = ref.STATISTICS_VARIANTS[variant](grads)
    assert any(abs(bad[k] / good[k] - 1) > 100 * 2e-5 for k in good)
