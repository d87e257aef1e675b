"""BalancedBatchNormalization (AdaB2N) against a NumPy port of the official
module, and its Keras contract with task ids as a second model input."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_batchopt import layers
from tests.conftest import to_numpy
from tests.layers.helpers import LAYOUTS
from tests.layers.helpers import axis_of
from tests.layers.helpers import from_layout
from tests.layers.helpers import to_layout
from tests.references import adab2n_numpy as ref

CHANNELS = 3
EPS = 1e-3


def _model(layout, **kwargs):
    shape = (CHANNELS, 4, 4) if layout == "channels_first" else (4, 4, 3)
    images = keras.Input(shape, name="image")
    tasks = keras.Input((), dtype="int32", name="task")
    layer = layers.BalancedBatchNormalization(
        axis=axis_of(layout), epsilon=EPS, **kwargs
    )
    return keras.Model([images, tasks], layer(images, task_ids=tasks)), layer


def _per_sample_dot(y_true, y_pred):
    """`sum(cotangent * y)` per sample; Keras averages it over the batch."""
    return ops.sum(y_true * y_pred, axis=(1, 2, 3))


# (current task, task ids of the batch): 8 batches of task 0, 8 of task 1
# (its ids mixed with replayed task 0), 8 of task 2, half of them without
# task 0 (a seen task absent from the batch keeps its share).
SCHEDULE = (
    [(0, [0] * 6)] * 8
    + [(1, [1, 1, 1, 1, 0, 0])] * 4
    + [(1, [1, 0, 1, 1, 1, 1])] * 4
    + [(2, [2, 2, 1, 0, 2, 1])] * 4
    + [(2, [2, 2, 2, 1, 2, 2])] * 4
)


@pytest.fixture
def read_before_update():
    """Keeps, on TensorFlow, the order between the forward read of `gamma`
    and SGD's update of it in `fit`'s graph-mode train step.

    With a loss linear in the output (as here), nothing in the backward
    pass waits for the forward output, and TensorFlow's Grappler dependency
    optimizer drops the control edge from the forward read of `gamma` to
    its `AssignSubVariableOp` (the only other path runs through an
    `IdentityN` it removes): the executor may then update `gamma` before
    the forward reads it, at random. Plain `keras.layers.BatchNormalization`
    loses the same edge (`scripts/tf_grappler_read_order_repro.py`), so this
    is TensorFlow's, not the layer's; the test checks the layer's
    arithmetic, with that one Grappler pass off.
    """
    if keras.backend.backend() != "tensorflow":
        yield
        return
    import tensorflow as tf

    before = tf.config.optimizer.get_experimental_options()
    tf.config.optimizer.set_experimental_options(
        {"dependency_optimization": False}
    )
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options(
            {
                "dependency_optimization": before.get(
                    "dependency_optimization", True
                )
            }
        )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_trajectory_matches_official(layout, read_before_update):
    """24 SGD steps of `fit`'s train step (jit where the backend has it)
    across two task switches: the loss (outputs and regularizer), the
    running statistics, eta, the task weights and the affine parameters
    equal the NumPy port of the official code after every step (float32,
    rtol 1e-5)."""
    hyper = dict(
        momentum=0.1, kappa=0.4, eps=EPS, lambd=2.0, ada_t0=1,
        learning_rate=0.5,
    )  # fmt: skip
    model, layer = _model(
        layout,
        num_tasks=4,
        kappa=hyper["kappa"],
        momentum=1 - hyper["momentum"],
        regularization=hyper["lambd"],
        regularization_start_task=hyper["ada_t0"],
    )
    model.compile(
        optimizer=keras.optimizers.SGD(hyper["learning_rate"]),
        loss=_per_sample_dot,
        jit_compile="auto",
    )
    rng = np.random.default_rng(0)
    params = {
        "task_weight": np.zeros(4),
        "gamma": np.ones(CHANNELS),
        "beta": np.zeros(CHANNELS),
    }
    state = {
        "running_mean": np.zeros(CHANNELS),
        "running_var": np.ones(CHANNELS),
        "step": 0,
        "cur_task": 0,
    }
    for task, ids in SCHEDULE:
        if task != state["cur_task"]:
            layers.set_current_task(model, task)
            state["cur_task"] = task
        ids = np.array(ids)
        shift = rng.normal(size=(1, CHANNELS, 1, 1))
        x = rng.normal(1.0 + 2.0 * ids[:, None, None, None] + shift, 1.5,
                       (6, CHANNELS, 4, 4))  # fmt: skip
        x = x.astype("float32")
        cotangent = rng.normal(size=x.shape).astype("float32")
        expected = ref.train_step(x, ids, params, state, hyper, cotangent)
        loss = model.train_on_batch(
            {"image": to_layout(x, layout), "task": ids},
            to_layout(cotangent, layout),
        )
        np.testing.assert_allclose(loss, expected["total"], rtol=1e-5)
        np.testing.assert_allclose(to_numpy(layer.eta), state["eta"], rtol=1e-6)
        for name, value in (
            ("moving_mean", state["running_mean"]),
            ("moving_variance", state["running_var"]),
        ):
            np.testing.assert_allclose(
                to_numpy(getattr(layer, name)), value, rtol=1e-5, atol=1e-6
            )
        for name, value in params.items():
            np.testing.assert_allclose(
                to_numpy(getattr(layer, name)), value, rtol=1e-5, atol=1e-6
            )
    # The task weights did move, from the statistics and the output.
    assert np.abs(params["task_weight"][:3]).min() > 1e-3
    assert params["task_weight"][3] == 0.0
    # Inference: the running statistics, whatever the task ids.
    y = model.predict(
        {"image": to_layout(x, layout), "task": np.zeros(6, "int32")},
        verbose=0,
    )
    expected = ref.normalize(
        x.astype(np.float64),
        state["running_mean"],
        state["running_var"],
        params["gamma"],
        params["beta"],
        EPS,
    )
    np.testing.assert_allclose(
        from_layout(to_numpy(y), layout), expected, rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("kappa", [0.0, 0.7, 1.0])
def test_eta_matches_official(kappa):
    """eta of the three cases of the official `get_eta`, and the running
    mean it moves (plain batch statistics without task ids)."""
    layer = layers.BalancedBatchNormalization(
        num_tasks=1, kappa=kappa, momentum=0.8
    )
    rng = np.random.default_rng(1)
    running = np.zeros(2)
    etas = ref.eta_sequence(6, 0.2, kappa)
    for eta in etas:
        x = rng.normal(3.0, 1.0, (5, 2)).astype("float32")
        layer(x, training=True)
        running = running + eta * (x.mean(0) - running)
        np.testing.assert_allclose(to_numpy(layer.eta), eta, rtol=1e-6)
        np.testing.assert_allclose(to_numpy(layer.moving_mean), running, 1e-5)
    assert int(to_numpy(layer.step)) == 6


def test_balanced_moments_and_ids_beyond_current_task():
    """One batch at task 2 with learned weights and a seen task absent:
    the official moments; a sample of a later task weighs 0 and leaves
    them unchanged."""
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 2.0, (7, CHANNELS, 3, 3)).astype("float32")
    ids = np.array([0, 2, 2, 0, 2, 2, 3])
    task_weight = np.array([0.5, -1.0, 0.3, 0.0])
    mean, var = ref.batch_moments(
        x[:6].astype(np.float64), ids[:6], task_weight, 2
    )
    for batch in (6, 7):  # the 7th sample is of task 3 > current task
        layer = layers.BalancedBatchNormalization(
            num_tasks=4, axis=1, momentum=0.0, regularization=0.0
        )
        layer.build(x.shape, ids.shape)
        layer.task_weight.assign(task_weight)
        layer.set_current_task(2)
        y = layer(x[:batch], task_ids=ids[:batch], training=True)
        # momentum 0: the running statistics are the batch statistics.
        np.testing.assert_allclose(to_numpy(layer.moving_mean), mean, 1e-5)
        np.testing.assert_allclose(to_numpy(layer.moving_variance), var, 1e-5)
        expected = ref.normalize(x[:6], mean, var, 1.0, 0.0, EPS)
        np.testing.assert_allclose(to_numpy(y)[:6], expected, 1e-5, 1e-5)
    # Task 1 is seen but absent from the batch: it keeps its share
    # exp(-1) / sum(c), and the weights of the samples sum to less than 1.
    assert ref.sample_weights(ids[:6], task_weight, 2).sum() < 1.0


def test_regularizer_from_start_task():
    """`add_loss`: lambda * (mse(mean) + mse(var)) with the new running
    statistics, from `regularization_start_task` on; none for 0."""
    x = np.random.default_rng(3).normal(2.0, 3.0, (4, 2)).astype("float32")
    layer = layers.BalancedBatchNormalization(
        num_tasks=2, regularization=3.0, regularization_start_task=1
    )
    layer(x, training=True)
    assert float(to_numpy(layer.losses[0])) == 0.0
    layer.set_current_task(1)
    layer(x, training=True)
    mean, var = x.mean(0), x.var(0)
    running_mean = to_numpy(layer.moving_mean)
    running_var = to_numpy(layer.moving_variance)
    expected = 3.0 * (
        np.mean((mean - running_mean) ** 2) + np.mean((var - running_var) ** 2)
    )
    assert expected > 1e-2
    np.testing.assert_allclose(to_numpy(layer.losses[0]), expected, 1e-5)
    unregularized = layers.BalancedBatchNormalization(
        num_tasks=2, regularization=0.0
    )
    unregularized(x, training=True)
    assert unregularized.losses == []
    # Built without task ids: no task weights, and a clear error for ids.
    assert layer.task_weight is None
    with pytest.raises(ValueError, match="without `task_ids`"):
        layer(x, task_ids=np.zeros(4, "int32"), training=True)


def test_fit_save_load_resume(tmp_path):
    """Task ids as a model input: `fit` (jit where available), save and
    load without custom_objects mid-task (current task, step and eta
    kept), then the same next step."""
    model, _ = _model("channels_last", num_tasks=3, kappa=0.4)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss="mse",
        jit_compile="auto",
    )
    rng = np.random.default_rng(4)
    x = rng.normal(1.0, 2.0, (12, 4, 4, 3)).astype("float32")
    y = rng.normal(size=x.shape).astype("float32")
    ids = np.arange(12) % 2
    data = {"image": x, "task": ids}
    model.fit(data, y, batch_size=4, shuffle=False, verbose=0)
    layers.set_current_task(model, 1)
    model.fit(data, y, batch_size=4, shuffle=False, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    layer = restored.layers[-1]
    assert isinstance(layer, layers.BalancedBatchNormalization)
    assert layer.get_config() == model.layers[-1].get_config()
    assert int(to_numpy(layer.current_task)) == 1
    assert int(to_numpy(layer.step)) == 6
    for m in (model, restored):
        m.fit(data, y, batch_size=4, shuffle=False, verbose=0)
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), 1e-5, 1e-6)
    assert np.abs(to_numpy(layer.task_weight)[:2]).min() > 0


def test_config_round_trip():
    layer = layers.BalancedBatchNormalization(
        num_tasks=5, kappa=0.1, regularization=0.5,
        regularization_start_task=1, axis=1, momentum=0.8,
        task_weight_initializer="ones",
    )  # fmt: skip
    clone = layers.BalancedBatchNormalization.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_tasks": 0}, "num_tasks"),
        ({"num_tasks": 2.0}, "num_tasks"),
        ({"num_tasks": 2, "kappa": 1.5}, "kappa"),
        ({"num_tasks": 2, "kappa": -0.1}, "kappa"),
        ({"num_tasks": 2, "regularization": -1.0}, "regularization"),
        ({"num_tasks": 2, "regularization_start_task": -1}, "start_task"),
        ({"num_tasks": 2, "momentum": 1.0}, "momentum"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        layers.BalancedBatchNormalization(**kwargs)


def test_bad_current_task():
    layer = layers.BalancedBatchNormalization(num_tasks=2)
    layer.build((None, 3))
    with pytest.raises(ValueError, match=r"task.*\[0, 2\).*task=2"):
        layer.set_current_task(2)
