import json
import os

import keras

from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.strategies.hard_batch_dataset import HardBatchDataset

STATE_FILE = "hard_batch_selection.json"


@keras_batchopt_export("keras_batchopt.strategies.HardBatchSelection")
class HardBatchSelection(keras.callbacks.Callback):
    """Records each step's loss for a `HardBatchDataset`'s selection.

    After every training step it takes the loss of that step's batch, as
    measured in the step's forward pass, i.e. *before* the step updated the
    weights (the official code's `loss.item()`), and hands it to the
    dataset, which uses it to choose the next round's batches.

    Keras reports in `logs["loss"]` the running mean over the epoch's
    steps, all of the same batch size here; the loss of step `t` is
    recovered as `t * mean_t - (t - 1) * mean_{t-1}`.

    With `backup_dir`, the selection state (every batch's last loss, the
    sort order, the current round and the position in it) is written to
    `backup_dir/hard_batch_selection.json` at the end of every epoch and
    read back when training starts, so that a run restarted with
    `keras.callbacks.BackupAndRestore(backup_dir)` (epoch-wise saving, the
    default) goes on with the same selection. The file is removed when
    `fit` ends normally, as `BackupAndRestore` removes its own.
    `get_state()` and `set_state()` give the same state as a dict.

    Args:
        dataset: the `HardBatchDataset` passed to `fit`.
        backup_dir: `None` (default) or a directory for the state file; the
            `BackupAndRestore` directory is a good choice.

    Example:
    >>> import keras, numpy as np, keras_batchopt
    >>> x = np.random.randn(64, 3).astype("float32")
    >>> y = (x.sum(axis=1) > 0).astype("int32")
    >>> data = keras_batchopt.strategies.HardBatchDataset(
    ...     x, y, batch_size=8, delta=0.5)
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> model.compile(optimizer="sgd", loss=keras.losses.
    ...     SparseCategoricalCrossentropy(from_logits=True))
    >>> selection = keras_batchopt.strategies.HardBatchSelection(data)
    >>> history = model.fit(data, epochs=3, callbacks=[selection], verbose=0)
    >>> len(data.schedule.round)  # batches in the current round
    4

    References:
        - Sahayam, Zakkam and Jayaraman, 2023, [Can we learn better with
          hard samples?](https://arxiv.org/abs/2304.03486)

    Note:
        `logs["loss"]` is the compiled loss plus the model's regularization
        losses (`model.losses`); the official code ranks batches by the
        cross-entropy alone (its models carry no such losses). The recovered
        per-step loss carries the float32 rounding of Keras's running mean,
        a relative error of about `t * 6e-8` at step `t` of an epoch, which
        can only swap batches whose losses are that close.
        `steps_per_execution` must be 1 (Keras reports one mean per
        execution, not per step).
    """

    def __init__(self, dataset, backup_dir=None):
        super().__init__()
        if not isinstance(dataset, HardBatchDataset):
            raise ValueError(
                "Argument `dataset` must be a "
                "keras_batchopt.strategies.HardBatchDataset. Received: "
                f"dataset={dataset!r}"
            )
        self.dataset = dataset
        self.backup_dir = backup_dir
        self._previous_mean = 0.0

    # --------------------------------------------------------------- state

    def get_state(self):
        """The selection state as a JSON-serializable dict."""
        return self.dataset.schedule.get_state()

    def set_state(self, state):
        """Restores a state from `get_state()`."""
        self.dataset.schedule.set_state(state)

    def _state_path(self):
        return os.path.join(self.backup_dir, STATE_FILE)

    # ----------------------------------------------------------- callbacks

    def on_train_begin(self, logs=None):
        steps = int(getattr(self.model, "steps_per_execution", 1) or 1)
        if steps != 1:
            raise ValueError(
                "HardBatchSelection needs one loss per step: compile the "
                "model with `steps_per_execution=1`. Received: "
                f"steps_per_execution={steps}"
            )
        # Batches Keras drew to build the model were not trained on.
        self.dataset.schedule.discard_pending()
        if self.backup_dir and os.path.exists(self._state_path()):
            with open(self._state_path()) as f:
                self.set_state(json.load(f))

    def on_epoch_begin(self, epoch, logs=None):
        self._previous_mean = 0.0

    def on_train_batch_end(self, batch, logs=None):
        mean = float(logs["loss"])
        loss = (batch + 1) * mean - batch * self._previous_mean
        self._previous_mean = mean
        self.dataset.schedule.record(loss)

    def on_epoch_end(self, epoch, logs=None):
        if not self.backup_dir:
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        temporary = self._state_path() + ".tmp"
        with open(temporary, "w") as f:
            json.dump(self.get_state(), f)
        os.replace(temporary, self._state_path())

    def on_train_end(self, logs=None):
        self.dataset.schedule.discard_pending()
        # Keras calls this only when `fit` ran to its end.
        if self.backup_dir and os.path.exists(self._state_path()):
            os.remove(self._state_path())
