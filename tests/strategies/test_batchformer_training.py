"""BatchFormer's shared-classifier step: labels and sample weights are
duplicated, so `fit` trains the classifier on both streams."""

import keras
import numpy as np

import keras_batchopt
from tests.conftest import to_numpy
from tests.references import batchformer_numpy as ref

enable = keras_batchopt.strategies.enable_batchformer_training
N, C, K = 6, 8, 3


def _model(dropout=0.0):
    model = keras.Sequential(
        [
            keras.Input((C,)),
            keras_batchopt.layers.BatchFormer(num_heads=4, dropout=dropout),
            keras.layers.Dense(K),
        ]
    )
    return enable(model)


def _cross_entropy(logits, y):
    z = logits - logits.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return -log_p[np.arange(len(y)), y]


def test_step_loss_is_the_mean_over_both_streams():
    rng = np.random.default_rng(0)
    w = ref.random_weights(C, C, rng)
    head_w, head_b = rng.normal(0, 1, (C, K)), rng.normal(0, 1, K)
    model = _model()
    model.layers[0].set_weights(ref.to_keras_weights(w, 4))
    model.layers[1].set_weights([head_w, head_b])
    model.compile(
        keras.optimizers.SGD(0.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x = rng.normal(0, 1, (N, C))
    y = rng.integers(0, K, N)
    sw = rng.uniform(0.1, 2.0, N)
    loss = model.train_on_batch(
        x.astype("float32"), y, sample_weight=sw.astype("float32")
    )
    features, y2 = ref.batchformer(x, y, w, True)
    per_row = _cross_entropy(features @ head_w + head_b, y2)
    want = np.sum(np.concatenate([sw, sw]) * per_row) / (2 * N)
    np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_fit_evaluate_predict_save_and_load(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (32, C)).astype("float32")
    y = rng.integers(0, K, 32)
    model = _model(dropout=0.5)
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x, y, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    predictions = model.predict(x, verbose=0)
    assert predictions.shape == (32, K)
    assert np.isfinite(model.evaluate(x, y, verbose=0)[0])
    path = str(tmp_path / "batchformer.keras")
    model.save(path)
    loaded = enable(keras.models.load_model(path))
    np.testing.assert_allclose(
        to_numpy(loaded.predict(x, verbose=0)), predictions, rtol=1e-6
    )
    loaded.fit(x, y, batch_size=8, verbose=0)
