import keras
from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.schedules import shapes


@keras_batchopt_export("keras_batchopt.schedules.PowerSchedule")
class PowerSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The Power scheduler: a learning rate that falls as a power of the
    number of tokens seen (Shen et al., IBM).

    Shen et al. found that the best WSD learning rate follows
    `batch_size * a * tokens^b` across model sizes, batch sizes and token
    budgets (under muP); the Power scheduler uses that law as the
    schedule itself, so nothing depends on the total number of tokens:

    ```
    n = step * tokens_per_step                  # tokens seen
    power(n) = min(max_learning_rate, batch_size * a * n^b)
    lr(s) = (s / W) * power(W * tokens_per_step)             s < W
          = power(n)                                         W <= s <= T - D
          = min_lr + (power((T - D) * tokens_per_step) - min_lr) * f(p)
                                                             s > T - D
    ```

    with `W = warmup_steps`, `D = decay_steps`, `T = total_steps`, `p` the
    progress through the decay and `f` a decay shape (see
    `WarmupStableDecay`).

    Args:
        max_learning_rate: the cap `eta_max`, a float > 0. Defaults to
            `0.02` (the paper's muP value).
        a: the law's coefficient, a float > 0. Defaults to `4.0`.
        b: the law's exponent, a float < 0. Defaults to `-0.51`.
        batch_size: `beta`, the batch size **in sequences** (samples) per
            optimizer step, an int >= 1. Defaults to `1`, which folds the
            batch size into `a`, as IBM's `PowerScheduler` does.
        tokens_per_step: the number of tokens per optimizer step (batch size
            times sequence length, for language models), an int >= 1.
            Defaults to `1`, which makes `n` the number of steps.
        warmup_steps: linear warmup to the power value at its end, in
            optimizer steps, an int >= 0. Defaults to `0`.
        decay_steps: the final decay's length in steps (an int >= 0, or a
            fraction of `total_steps`). Defaults to `0`: no decay. The paper
            decays over the last ~10% of the tokens.
        total_steps: the run's length in steps; needed when `decay_steps`
            is positive.
        decay_shape: the final decay's shape, as in `WarmupStableDecay`.
            Defaults to `"exponential"` (the paper's PowerLM-3B).
        min_learning_rate: the decay's floor, a float >= 0. Defaults to
            `0.0`.
        half_life: for the exponential decay: the half-life in steps.
            Defaults to a tenth of `decay_steps`.
        name: the schedule's name.

    Example:

    >>> import keras, keras_batchopt
    >>> schedule = keras_batchopt.schedules.PowerSchedule(
    ...     max_learning_rate=0.02, a=4.0, b=-0.51, batch_size=1,
    ...     tokens_per_step=4096, warmup_steps=100)
    >>> [round(float(schedule(s)), 6) for s in (50, 100, 1000, 10000)]
    [0.002746, 0.005492, 0.001697, 0.000525]

    Note:
        IBM's `PowerScheduler` (dolomite-engine) has no `batch_size` (it is
        part of `a`) and no final decay; with the defaults above this
        schedule equals it. The unit of `batch_size` in the paper's law is
        not stated beyond "batch size"; we take sequences, and `a` fitted in
        another unit must be rescaled. With `b < 0` the power value is
        infinite at `n = 0`, so a run without warmup starts at
        `max_learning_rate`.

    References:
        - Shen et al., 2024, [Power Scheduler: A Batch Size and Token
          Number Agnostic Learning Rate Scheduler](
          https://arxiv.org/abs/2408.13359)
    """

    def __init__(
        self,
        max_learning_rate=0.02,
        a=4.0,
        b=-0.51,
        batch_size=1,
        tokens_per_step=1,
        warmup_steps=0,
        decay_steps=0,
        total_steps=None,
        decay_shape="exponential",
        min_learning_rate=0.0,
        half_life=None,
        name="PowerSchedule",
    ):
        self.max_learning_rate = validation.check_positive(
            "max_learning_rate", max_learning_rate
        )
        self.a = validation.check_positive("a", a)
        b = validation.check_in_interval(
            "b", b, -float("inf"), 0.0, False, False
        )
        self.b = b
        self.batch_size = validation.check_positive_int(
            "batch_size", batch_size
        )
        self.tokens_per_step = validation.check_positive_int(
            "tokens_per_step", tokens_per_step
        )
        self.total_steps = shapes.check_total_steps(total_steps)
        self.warmup_steps = shapes.check_steps(
            "warmup_steps", warmup_steps, self.total_steps
        )
        self.decay_steps = decay_steps
        self._decay = shapes.check_steps(
            "decay_steps", decay_steps, self.total_steps
        )
        if self._decay and self.total_steps is None:
            raise ValueError(
                "Argument `total_steps` must be given when `decay_steps` "
                f"is positive (decay_steps={decay_steps!r}). Received: "
                "total_steps=None"
            )
        if self._decay and self.total_steps < self.warmup_steps + self._decay:
            raise ValueError(
                "Argument `total_steps` must be >= warmup_steps + "
                f"decay_steps = {self.warmup_steps + self._decay}. "
                f"Received: total_steps={self.total_steps}"
            )
        self.decay_shape = validation.check_one_of(
            "decay_shape", decay_shape, shapes.DECAY_SHAPES
        )
        self.min_learning_rate = validation.check_non_negative(
            "min_learning_rate", min_learning_rate
        )
        self.half_life = half_life
        self._half_life = shapes.check_half_life(half_life, self._decay)
        self.name = name

    def power_value(self, step):
        """`min(max_learning_rate, batch_size * a * n^b)` at `step`."""
        tokens = ops.cast(step, "float32") * float(self.tokens_per_step)
        safe = ops.maximum(tokens, 1.0)
        value = self.batch_size * self.a * ops.power(safe, self.b)
        value = ops.where(tokens > 0, value, self.max_learning_rate)
        return ops.minimum(value, self.max_learning_rate)

    def __call__(self, step):
        with keras.name_scope(self.name):
            step = ops.cast(step, "float32")
            lr = self.power_value(step)
            if self.warmup_steps:
                peak = self.power_value(self.warmup_steps)
                warmup = shapes.linear_warmup(step, self.warmup_steps, peak)
                lr = ops.where(step < self.warmup_steps, warmup, lr)
            if self._decay:
                start = self.total_steps - self._decay
                decay = shapes.decay(
                    self.decay_shape,
                    step,
                    start,
                    self._decay,
                    self.power_value(start),
                    self.min_learning_rate,
                    self._half_life,
                )
                lr = ops.where(step > start, decay, lr)
            return lr

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "a": self.a,
            "b": self.b,
            "batch_size": self.batch_size,
            "tokens_per_step": self.tokens_per_step,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
            "total_steps": self.total_steps,
            "decay_shape": self.decay_shape,
            "min_learning_rate": self.min_learning_rate,
            "half_life": self.half_life,
            "name": self.name,
        }
