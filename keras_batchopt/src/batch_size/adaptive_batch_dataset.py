import collections
import math

import numpy as np

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.array_adapter import ArrayAdapter


@keras_batchopt_export("keras_batchopt.batch_size.AdaptiveBatchDataset")
class AdaptiveBatchDataset(ArrayAdapter):
    """In-memory training data whose batch size can grow during `fit`.

    Pass it to `model.fit` in place of `x` (with no `y` or `batch_size`),
    together with an `AdaptiveBatchSize` callback, which grows
    `dataset.batch_size` when its test asks for a larger batch. The next
    batch the dataset produces has the new size, on every backend.

    The data is served as a stream of reshuffled passes: a batch that
    crosses the end of a pass takes its remaining samples from the next
    one. An epoch is a fixed number of steps, `steps_per_epoch`, which
    defaults to one pass at the initial batch size; as the batch grows an
    epoch therefore covers more samples. Count progress in samples
    (`AdaptiveBatchSize` logs `samples_seen`) rather than in epochs.

    Args:
        x: inputs: a NumPy array (or anything `np.asarray` accepts), or a
            tuple, list or dict of them, all with the same first dimension.
        y: targets, in the same form, or `None`.
        sample_weight: per-sample weights, or `None`.
        batch_size: the initial batch size, an int >= 1.
        max_batch_size: the largest batch allowed, an int >= batch_size, or
            `None` (default: the number of samples).
        shuffle: whether each pass is a new permutation. Defaults to
            `True`.
        seed: the shuffling seed, an int or `None`.
        steps_per_epoch: the number of steps per epoch, an int >= 1, or
            `None` (default: one pass at the initial batch size).

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> x = np.random.randn(100, 3).astype("float32")
    >>> y = x.sum(axis=1, keepdims=True)
    >>> data = keras_batchopt.batch_size.AdaptiveBatchDataset(
    ...     x, y, batch_size=10, seed=0)
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> data.batch_size = 25  # what AdaptiveBatchSize does
    >>> history = model.fit(data, epochs=1, verbose=0)  # 10 steps of 25

    References:
        - Lau, Liu and Kolar, 2024, [AdAdaGrad: Adaptive Batch Size Schemes
          for Adaptive Gradient Methods](https://arxiv.org/abs/2402.11215)

    Note:
        Keras reads `steps_per_epoch` once per `fit` call. The dataset is a
        Keras `DataAdapter` (the one form of input whose batch dimension
        Keras leaves open on TensorFlow); validation data is passed as
        usual. No backend reads batches ahead: on TensorFlow the
        prefetch `tf.data` would inject is turned off, so a size set in
        `on_train_batch_end` applies to the very next step however loaded
        the machine is (a read-ahead thread made that step timing-dependent).
    """

    def __init__(
        self,
        x,
        y=None,
        sample_weight=None,
        batch_size=32,
        max_batch_size=None,
        shuffle=True,
        seed=None,
        steps_per_epoch=None,
    ):
        self._set_arrays(x, y, sample_weight)
        self.initial_batch_size = validation.check_positive_int(
            "batch_size", batch_size
        )
        if max_batch_size is None:
            max_batch_size = max(self.num_samples, batch_size)
        self.max_batch_size = validation.check_positive_int(
            "max_batch_size", max_batch_size
        )
        if self.max_batch_size < self.initial_batch_size:
            raise ValueError(
                "Argument `max_batch_size` must be >= batch_size "
                f"({batch_size}). Received: max_batch_size={max_batch_size}"
            )
        self.shuffle = validation.check_bool("shuffle", shuffle)
        self.seed = seed
        self._steps_per_epoch = validation.check_positive_int_or_none(
            "steps_per_epoch", steps_per_epoch
        )
        self._batch_size = self.initial_batch_size
        self._rng = np.random.default_rng(seed)
        self._order = self._new_order()
        self._cursor = 0
        self.samples_produced = 0
        # Batches produced and not yet trained on (read by the callback).
        self.pending = collections.deque()

    # ------------------------------------------------------------ batch size

    @property
    def batch_size(self):
        """The size of the next batch; settable (an int in
        [1, max_batch_size])."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value):
        value = validation.check_positive_int("batch_size", value)
        if value > self.max_batch_size:
            raise ValueError(
                f"Argument `batch_size` must be <= max_batch_size "
                f"({self.max_batch_size}). Received: batch_size={value}"
            )
        self._batch_size = value

    # -------------------------------------------------------------- the stream

    def _new_order(self):
        if self.shuffle:
            return self._rng.permutation(self.num_samples)
        return np.arange(self.num_samples)

    def _take(self, size):
        parts = []
        while size > 0:
            if self._cursor == self.num_samples:
                self._order, self._cursor = self._new_order(), 0
            part = self._order[self._cursor : self._cursor + size]
            self._cursor += len(part)
            size -= len(part)
            parts.append(part)
        return np.concatenate(parts)

    def _batch(self):
        size = self._batch_size
        index = self._take(size)
        batch = self._pick(lambda a: a[index])
        self.samples_produced += size
        self.pending.append(batch)
        return batch

    def _generate(self):
        for _ in range(self.num_batches):
            yield self._batch()

    def _tf_example(self):
        return tuple(
            s for s in (self._x, self._y, self._sample_weight) if s is not None
        )

    @property
    def num_batches(self):
        if self._steps_per_epoch is not None:
            return self._steps_per_epoch
        return math.ceil(self.num_samples / self.initial_batch_size)

    def on_epoch_begin(self):
        # Batches produced by an abandoned iterator are never trained on.
        self.pending.clear()
