"""Hard mini-batch selection: the official selection order, the measured
loss, resuming, and argument checks."""

import os

import keras
import numpy as np
import pytest

from keras_batchopt.strategies import HardBatchDataset
from keras_batchopt.strategies import HardBatchSelection
from tests.references import hard_batch_numpy

BATCH = 8


def data_arrays(n=64, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 4).astype("float32")
    # Labels noisy enough that batches differ in loss, and go on differing.
    y = ((x[:, 0] + 0.8 * rng.randn(n)) > 0).astype("int32") + (
        x[:, 1] > 0.5
    ).astype("int32")
    return x, y


def compiled_model(seed=0, **compile_kwargs):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(3),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.2, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **compile_kwargs,
    )
    return model


class Recording(HardBatchSelection):
    """Also keeps (batch id, recovered loss) of every step."""

    def __init__(self, dataset, **kwargs):
        super().__init__(dataset, **kwargs)
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        schedule = self.dataset.schedule
        batch_id = schedule.pending[0][0]
        super().on_train_batch_end(batch, logs)
        self.steps.append((batch_id, schedule.losses[batch_id]))


def run(delta, epochs, x, y, callbacks=(), **fit_kwargs):
    data = HardBatchDataset(x, y, batch_size=BATCH, delta=delta)
    recording = Recording(data)
    model = compiled_model()
    model.fit(
        data,
        epochs=epochs,
        callbacks=[recording, *callbacks],
        verbose=0,
        **fit_kwargs,
    )
    return model, recording


def official(steps, delta, epochs, variant=hard_batch_numpy.CORRECT):
    losses = [loss for _, loss in steps]

    def loss_of(step, batch_id):
        return losses[step] if step < len(losses) else 0.0

    return hard_batch_numpy.hard_batch_selection(
        loss_of, len(steps) // epochs, delta, epochs, variant
    )


# delta = 3/8 gives rounds of 3 that run across epoch boundaries.
@pytest.mark.parametrize("delta", [0.5, 0.375])
def test_selection_follows_the_official_loop(delta):
    x, y = data_arrays()
    epochs = 4
    _, recording = run(delta, epochs, x, y, validation_data=(x[:16], y[:16]))
    ours = [batch_id for batch_id, _ in recording.steps]
    assert len(ours) == epochs * 8  # the same step budget
    assert ours[:8] == list(range(8))  # the warm-up epoch
    assert ours == official(recording.steps, delta, epochs)
    # The selection is not trivial: batches drop out and come back.
    later = ours[8:]
    assert len(set(later)) > int(delta * 8)
    for variant in hard_batch_numpy.VARIANTS[1:]:
        if variant == "no_stale_order":
            continue  # differs only on tied losses; checked below
        assert official(recording.steps, delta, epochs, variant) != ours


def test_ties_keep_the_previous_sort_order():
    # Equal losses: Python's stable sort keeps the order of the last sort,
    # not the batch order.
    losses = {0: 1.0, 1: 3.0, 2: 1.0, 3: 2.0}
    from keras_batchopt.src.strategies.hard_batch_schedule import (
        HardBatchSchedule,
    )

    def loss_of(step, batch_id):
        return losses[batch_id] if step < 4 else [1.0, 1.0, 1.0, 1.0][step % 4]

    schedule = HardBatchSchedule(4, 0.5, 1)
    ours = []
    for step in range(12):
        batch_id = schedule.next_batch()
        schedule.record(loss_of(step, batch_id))
        ours.append(batch_id)
    expected = hard_batch_numpy.hard_batch_selection(loss_of, 4, 0.5, 3)
    assert ours == expected
    mistaken = hard_batch_numpy.hard_batch_selection(
        loss_of, 4, 0.5, 3, "no_stale_order"
    )
    assert mistaken != ours


def test_recorded_loss_is_the_pre_update_loss():
    x, y = data_arrays()
    data = HardBatchDataset(x, y, batch_size=BATCH, delta=0.5)
    recording = Recording(data)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    before = []

    twin = compiled_model()

    class PreUpdate(keras.callbacks.Callback):
        """Keeps the weights before each step; at its end, evaluates the
        loss of the step's batch with them."""

        def on_train_batch_begin(self, batch, logs=None):
            sync = getattr(self.model, "jax_state_sync", None)
            if sync is not None:
                sync()
            twin.set_weights(self.model.get_weights())

        def on_train_batch_end(self, batch, logs=None):
            bx, by = data.batch(data.schedule.pending[0][0])
            loss = loss_fn(by, twin(bx, training=False))
            before.append(float(keras.ops.convert_to_numpy(loss)))

    model = compiled_model()
    model.fit(data, epochs=3, callbacks=[PreUpdate(), recording], verbose=0)
    recovered = [loss for _, loss in recording.steps]
    np.testing.assert_allclose(recovered, before, rtol=2e-5, atol=1e-6)


def test_delta_one_is_plain_training_in_batch_order():
    x, y = data_arrays()
    hard, _ = run(1.0, 3, x, y)
    plain = compiled_model()
    plain.fit(x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0)
    for a, b in zip(hard.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_steps_per_epoch_keeps_the_schedule():
    x, y = data_arrays()
    _, recording = run(0.5, 6, x, y, steps_per_epoch=4)
    ours = [batch_id for batch_id, _ in recording.steps]
    assert ours == official(recording.steps, 0.5, 3)


class StopAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("interrupted")


def test_restart_with_backup_and_restore_resumes_the_selection(tmp_path):
    x, y = data_arrays()
    epochs = 5
    straight, recording = run(0.5, epochs, x, y)

    backup = os.path.join(tmp_path, "backup")

    def attempt(stop, seed):
        data = HardBatchDataset(x, y, batch_size=BATCH, delta=0.5)
        restarted = Recording(data, backup_dir=backup)
        model = compiled_model(seed=seed)
        callbacks = [keras.callbacks.BackupAndRestore(backup), restarted]
        if stop is not None:
            callbacks.append(StopAtEpoch(stop))
        try:
            model.fit(data, epochs=epochs, callbacks=callbacks, verbose=0)
        except RuntimeError:
            pass
        return model, restarted

    _, first = attempt(stop=3, seed=0)
    assert os.path.exists(os.path.join(backup, "hard_batch_selection.json"))
    # Another initialization: the weights come from the backup.
    resumed, second = attempt(stop=None, seed=1)
    steps = first.steps + second.steps
    assert len(first.steps) == 24 and len(steps) == len(recording.steps)
    assert [i for i, _ in steps] == [i for i, _ in recording.steps]
    np.testing.assert_allclose(
        [loss for _, loss in steps],
        [loss for _, loss in recording.steps],
        rtol=1e-5,
    )
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not os.path.exists(backup)


def test_state_round_trips_through_get_state():
    x, y = data_arrays()
    _, recording = run(0.5, 3, x, y)
    state = recording.get_state()
    other = HardBatchSelection(
        HardBatchDataset(x, y, batch_size=BATCH, delta=0.5)
    )
    other.set_state(state)
    assert other.get_state() == state
    assert state["steps"] == 24 and len(state["round"]) == 4


@pytest.mark.parametrize("delta", [0.0, -0.5, 1.5, float("nan")])
def test_bad_delta_names_argument_range_and_value(delta):
    x, y = data_arrays()
    with pytest.raises(ValueError, match=r"`delta` must be in \(0, 1\]"):
        HardBatchDataset(x, y, batch_size=BATCH, delta=delta)


def test_delta_selecting_no_batch_is_rejected():
    x, y = data_arrays()
    with pytest.raises(ValueError, match=r"`delta`.*Received: delta=0.1"):
        HardBatchDataset(x, y, batch_size=BATCH, delta=0.1)


def test_other_bad_arguments():
    x, y = data_arrays()
    with pytest.raises(ValueError, match="warmup_epochs"):
        HardBatchDataset(x, y, warmup_epochs=0)
    with pytest.raises(ValueError, match="batch_size.*Received: batch_size=65"):
        HardBatchDataset(x, y, batch_size=65)
    with pytest.raises(ValueError, match="`dataset` must be a"):
        HardBatchSelection((x, y))
    data = HardBatchDataset(x, y, batch_size=BATCH)
    model = compiled_model(steps_per_execution=2)
    with pytest.raises(ValueError, match="steps_per_execution=2"):
        model.fit(data, callbacks=[HardBatchSelection(data)], verbose=0)
