import math

import keras

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.batch_size import statistics as stats_lib
from keras_batchopt.src.batch_size.adaptive_batch_dataset import (
    AdaptiveBatchDataset,
)
from keras_batchopt.src.batch_size.per_sample import StatisticsFunction

TESTS = ("norm", "inner_product", "augmented_inner_product")


def _set_learning_rate(model, value):
    """Assigns the optimizer's learning-rate variable between steps."""
    sync = getattr(model, "jax_state_sync", None)
    if sync is not None:
        # JAX keeps the training state outside the variables during fit;
        # write it back so that the next step re-reads the assignment.
        sync()
    model.optimizer.learning_rate = value


@keras_batchopt_export("keras_batchopt.batch_size.AdaptiveBatchSize")
class AdaptiveBatchSize(keras.callbacks.Callback):
    """Grows the batch size during `fit` by AdAdaGrad's statistical tests.

    Every `test_interval` steps the callback computes per-sample gradients
    of the batch just trained on (at most `max_test_batch_size` samples;
    see `gradient_statistics`) and asks the chosen test for the smallest
    batch whose gradient is accurate enough:

    ```
    m = mean_i g_i
    "norm":          b = ceil(sum_j Var_i(g_ij) / (eta^2 ||m||^2))
    "inner_product": b = ceil(Var_i(<g_i, m>) / (theta^2 ||m||^4))
    "augmented_inner_product":
                     b = max(b_inner_product,
                             ceil(sum_j Var_i(g_i - <g_i,m> m/||m||^2)_j
                                  / (nu^2 ||m||^2)))
    new batch size = min(max(current, round_up(b, batch_size_multiple)),
                         max_batch_size)
    ```

    The batch never shrinks. With `learning_rate_schedule`, the learning
    rate follows the number of samples seen rather than steps: the
    schedule is called with `samples_seen / initial_batch_size`, the step
    count of a run at the initial batch size, so a schedule written for
    that run keeps its pace per sample.

    Args:
        dataset: the `AdaptiveBatchDataset` given to `fit`.
        test: `"norm"` (default), `"inner_product"` or
            `"augmented_inner_product"`.
        eta: the norm test's tolerance, a float > 0. Defaults to `0.1`.
        theta: the inner-product test's tolerance, a float > 0. Defaults
            to `0.1`.
        nu: the orthogonality test's tolerance, a float > 0. Defaults to
            `0.1`.
        test_interval: run the test every this many steps, an int >= 1.
            Defaults to `10`.
        max_test_batch_size: the most samples used for per-sample
            gradients, an int >= 2. Defaults to `256`.
        batch_size_multiple: round new batch sizes up to a multiple of this
            (fewer distinct shapes, fewer recompilations on JAX and
            TensorFlow), an int >= 1. Defaults to `1`.
        inner_product_scope: `"per_variable"` (default; AdAdaGrad's code)
            or `"global"` (the papers' formulas); see
            `gradient_statistics`.
        loss: the loss for per-sample gradients. Defaults to the model's
            compiled loss.
        learning_rate_schedule: `None` (default), or a
            `LearningRateSchedule` or callable driven by samples seen (see
            above). The optimizer must then have a float learning rate.
        max_samples: stop training once this many samples have been
            trained on, an int >= 1, or `None`.
        verbose: 1 prints each change of batch size.

    Attributes:
        samples_seen: samples trained on so far.
        history: a list of dicts, one per test: `step`, `samples_seen`,
            `batch_size` (before), `proposed`, `new_batch_size`, and the
            statistics.

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> x = np.random.randn(512, 4).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> data = keras_batchopt.batch_size.AdaptiveBatchDataset(
    ...     x, y, batch_size=8, max_batch_size=128, seed=0)
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> model.compile(
    ...     optimizer=keras.optimizers.Adagrad(0.1),
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> grow = keras_batchopt.batch_size.AdaptiveBatchSize(
    ...     data, test="norm", eta=0.5, test_interval=5)
    >>> history = model.fit(data, epochs=2, callbacks=[grow], verbose=0)
    >>> data.batch_size >= 8
    True

    References:
        - Lau, Liu and Kolar, 2024, [AdAdaGrad: Adaptive Batch Size Schemes
          for Adaptive Gradient Methods](https://arxiv.org/abs/2402.11215)
        - Byrd, Chin, Nocedal and Wu, 2012, [Sample size selection in
          optimization methods for machine learning](
          https://doi.org/10.1007/s10107-012-0572-5)
        - Bollapragada, Byrd and Nocedal, 2018, [Adaptive Sampling
          Strategies for Stochastic Optimization](
          https://arxiv.org/abs/1710.11258)

    Note:
        AdAdaGrad's code tests the batch *before* the step, on a copy of
        the model in training mode, and its tests return
        `max(test batch, b)`, which can shrink the batch when the test
        batch is smaller than the current one. Here the test runs after
        the step on the same batch, in inference mode, and the batch never
        shrinks, as the paper states. On TensorFlow the input pipeline may
        have produced a batch ahead, so a new size can take effect one
        batch later.
    """

    def __init__(
        self,
        dataset,
        test="norm",
        eta=0.1,
        theta=0.1,
        nu=0.1,
        test_interval=10,
        max_test_batch_size=256,
        batch_size_multiple=1,
        inner_product_scope="per_variable",
        loss=None,
        learning_rate_schedule=None,
        max_samples=None,
        verbose=0,
    ):
        super().__init__()
        if not isinstance(dataset, AdaptiveBatchDataset):
            raise ValueError(
                "Argument `dataset` must be an AdaptiveBatchDataset (the "
                f"one passed to fit). Received: dataset={dataset!r}"
            )
        self.dataset = dataset
        self.test = validation.check_one_of("test", test, TESTS)
        self.eta = validation.check_positive("eta", eta)
        self.theta = validation.check_positive("theta", theta)
        self.nu = validation.check_positive("nu", nu)
        self.test_interval = validation.check_positive_int(
            "test_interval", test_interval
        )
        self.max_test_batch_size = validation.check_positive_int(
            "max_test_batch_size", max_test_batch_size
        )
        if self.max_test_batch_size < 2:
            raise ValueError(
                "Argument `max_test_batch_size` must be an integer >= 2. "
                f"Received: max_test_batch_size={max_test_batch_size}"
            )
        self.batch_size_multiple = validation.check_positive_int(
            "batch_size_multiple", batch_size_multiple
        )
        self.inner_product_scope = validation.check_one_of(
            "inner_product_scope",
            inner_product_scope,
            stats_lib.SCOPES,
        )
        self.loss = loss
        if learning_rate_schedule is not None and not callable(
            learning_rate_schedule
        ):
            raise ValueError(
                "Argument `learning_rate_schedule` must be None, a "
                "LearningRateSchedule or a callable. Received: "
                f"learning_rate_schedule={learning_rate_schedule!r}"
            )
        self.learning_rate_schedule = learning_rate_schedule
        self.max_samples = validation.check_positive_int_or_none(
            "max_samples", max_samples
        )
        self.verbose = verbose
        self.samples_seen = 0
        self.history = []
        self._statistics = None
        self._step = 0

    # ----------------------------------------------------------------- tests

    def propose(self, statistics):
        """The batch size the configured test asks for (or None)."""
        if self.test == "norm":
            return stats_lib.norm_test(statistics, self.eta)
        if self.test == "inner_product":
            return stats_lib.inner_product_test(statistics, self.theta)
        return stats_lib.augmented_inner_product_test(
            statistics, self.theta, self.nu
        )

    def next_batch_size(self, current, proposed):
        """Never shrinks, rounds up to the multiple, caps at the maximum."""
        if proposed is None or proposed <= current:
            return current
        multiple = self.batch_size_multiple
        rounded = int(math.ceil(proposed / multiple) * multiple)
        return min(rounded, self.dataset.max_batch_size)

    # ------------------------------------------------------------- callbacks

    def on_train_begin(self, logs=None):
        optimizer = self.model.optimizer
        if self.learning_rate_schedule is not None and isinstance(
            optimizer._learning_rate,
            keras.optimizers.schedules.LearningRateSchedule,
        ):
            raise ValueError(
                "Argument `learning_rate_schedule` drives the learning rate "
                "by samples seen, so the optimizer must have a float "
                "learning rate. Received: an optimizer whose learning rate "
                f"is {optimizer._learning_rate!r}"
            )
        if self._statistics is None:
            self._statistics = StatisticsFunction(
                self.model, self.loss, self.inner_product_scope
            )

    def on_train_batch_begin(self, batch, logs=None):
        if self.learning_rate_schedule is not None:
            clock = self.samples_seen / self.dataset.initial_batch_size
            value = self.learning_rate_schedule(clock)
            _set_learning_rate(
                self.model, float(keras.ops.convert_to_numpy(value))
            )

    def on_train_batch_end(self, batch, logs=None):
        # One call per execution of `steps_per_execution` steps.
        steps = int(getattr(self.model, "steps_per_execution", 1) or 1)
        pending = self.dataset.pending
        if not pending:
            raise ValueError(
                "Argument `dataset` of AdaptiveBatchSize must be the "
                "AdaptiveBatchDataset passed to fit (it produced no batch "
                f"for this step). Received: dataset={self.dataset!r}"
            )
        for _ in range(min(steps, len(pending))):
            trained = pending.popleft()
            size = len(keras.tree.flatten(trained[0])[0])
            self.samples_seen += size
            self._step += 1
            if self._step % self.test_interval == 0:
                self._run_test(trained, size)
        if logs is not None:
            logs["batch_size"] = size
            logs["samples_seen"] = self.samples_seen
        if self.max_samples is not None and (
            self.samples_seen >= self.max_samples
        ):
            self.model.stop_training = True

    def _run_test(self, trained, size):
        current = self.dataset.batch_size
        if current >= self.dataset.max_batch_size or len(trained) < 2:
            return
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()
        n = min(size, self.max_test_batch_size)
        head = lambda a: a[:n]  # noqa: E731
        x = keras.tree.map_structure(head, trained[0])
        y = keras.tree.map_structure(head, trained[1])
        statistics = self._statistics(x, y)
        proposed = self.propose(statistics)
        new = self.next_batch_size(current, proposed)
        self.history.append(
            dict(
                step=self._step,
                samples_seen=self.samples_seen,
                batch_size=current,
                proposed=proposed,
                new_batch_size=new,
                **statistics,
            )
        )
        if new != current:
            self.dataset.batch_size = new
            if self.verbose:
                print(
                    f"\nAdaptiveBatchSize: step {self._step}, "
                    f"{self.samples_seen} samples: batch size {current} -> "
                    f"{new} ({self.test} test asked for {proposed})"
                )
