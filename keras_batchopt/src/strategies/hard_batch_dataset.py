from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.array_adapter import ArrayAdapter
from keras_batchopt.src.strategies.hard_batch_schedule import HardBatchSchedule


@keras_batchopt_export("keras_batchopt.strategies.HardBatchDataset")
class HardBatchDataset(ArrayAdapter):
    """In-memory training data with fixed mini-batches, trained hardest
    first (hard mini-batch selection).

    The samples are cut once, in order, into `b = len(x) // batch_size`
    mini-batches (a last partial batch is dropped), so batch `i` always
    holds samples `i * batch_size` to `(i + 1) * batch_size - 1`. Pass the
    dataset to `model.fit` in place of `x` (no `y`, no `batch_size`)
    together with a `HardBatchSelection` callback, which records the loss
    of every step. Each epoch is `b` steps:

    - the first `warmup_epochs` epochs train every batch in order;
    - then training goes in rounds: sort all batches by their recorded
      loss, highest first, and train the top `k = floor(delta * b)` in
      batch order, recording their new losses. Unselected batches keep
      their old loss, so they come back once the selected ones have become
      easier. A round may run across an epoch boundary.

    `fit(epochs=E)` therefore takes `E * b` optimizer steps, the step budget
    of the same run without selection (and of the official code).

    Args:
        x: inputs: a NumPy array (or anything `np.asarray` accepts), or a
            tuple, list or dict of them, all with the same first dimension.
        y: targets, in the same form, or `None`.
        sample_weight: per-sample weights, or `None`.
        batch_size: samples per batch, an int in [1, number of samples].
            Defaults to `32`.
        delta: the fraction of batches trained per round, a float in
            (0, 1]; `1` is ordinary training in a fixed order. Defaults to
            `0.5`, the paper's choice.
        warmup_epochs: epochs over all batches before selection starts,
            an int >= 1. Defaults to `1`, as in the official code.

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

    References:
        - Sahayam, Zakkam and Jayaraman, 2023, [Can we learn better with
          hard samples?](https://arxiv.org/abs/2304.03486)
        - Official code: https://github.com/imjohnzakkam/DyBAT (`run.py`,
          `turbo_train`; commit a0d7b25155c9ab0c59c5c39f7b0b625016fd4efe)

    Note:
        The official code iterates its whole data loader in every round
        and skips the unselected batches; here only the selected batches
        are produced, so no time goes to loading skipped ones. It is a
        Keras `DataAdapter` rather than a `keras.utils.PyDataset`: Keras
        puts a `tf.data` prefetch after a `PyDataset`, which would choose
        the next round before the last losses of the current one are
        recorded, at a point that depends on thread timing. Here no backend
        reads ahead, except Keras's JAX trainer on an accelerator, which
        fetches one batch ahead: the first batch of each round is then
        chosen before the loss of the previous step is known, and that
        choice uses the previous step's batch's older loss (counted in
        `schedule.stale_rounds`). `fit`'s `shuffle` has no effect.
    """

    def __init__(
        self,
        x,
        y=None,
        sample_weight=None,
        batch_size=32,
        delta=0.5,
        warmup_epochs=1,
    ):
        self._set_arrays(x, y, sample_weight)
        self._batch_size = validation.check_positive_int(
            "batch_size", batch_size
        )
        if self._batch_size > self.num_samples:
            validation.fail(
                "batch_size",
                f"in [1, {self.num_samples}] (the number of samples)",
                batch_size,
            )
        self.delta = validation.check_in_interval(
            "delta", delta, 0, 1, low_closed=False, high_closed=True
        )
        self.warmup_epochs = validation.check_positive_int(
            "warmup_epochs", warmup_epochs
        )
        batches = self.num_samples // self._batch_size
        if int(self.delta * batches) < 1:
            validation.fail(
                "delta",
                f"in [1/{batches}, 1] so that a round selects at least "
                f"one of the {batches} batches",
                delta,
            )
        self.schedule = HardBatchSchedule(
            batches, self.delta, self.warmup_epochs
        )

    # ------------------------------------------------------------- batches

    def batch(self, index):
        """The inputs, targets and weights of fixed batch `index`."""
        start = index * self.batch_size
        return self._pick(lambda a: a[start : start + self.batch_size])

    def _generate(self):
        for _ in range(self.num_batches):
            # A round needs every loss before it, which is recorded before
            # Keras asks for the next batch unless it reads ahead (JAX on
            # an accelerator); then the last loss is stale.
            yield self.batch(self.schedule.next_batch(stale_ok=True))

    def _tf_example(self):
        return self.batch(0)

    @property
    def num_batches(self):
        return self.schedule.num_batches

    @property
    def batch_size(self):
        return self._batch_size
