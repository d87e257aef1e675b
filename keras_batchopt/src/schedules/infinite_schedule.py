import keras
from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.schedules import shapes

COOLDOWN_SHAPES = ("cosine", "inv_sqrt")


def _inv_sqrt_fraction(p, alpha):
    """``h(p) = 1/sqrt(1 + alpha p)`` rescaled to go from 1 to 0."""
    end = (1.0 + alpha) ** -0.5
    return (ops.power(1.0 + alpha * p, -0.5) - end) / (1.0 - end)


@keras_batchopt_export("keras_batchopt.schedules.InfiniteSchedule")
class InfiniteSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """The infinite learning-rate schedule for continual pre-training.

    Four phases (Ibrahim et al. 2024; Singh et al. 2025): a linear warmup
    to `max_learning_rate`; a cooldown to `constant_learning_rate`; a
    constant phase of any length, during which training continues and
    datasets change; and, only when a usable model is needed, a short
    annealing to `min_learning_rate` that starts at a step chosen at run
    time. Training continues from the constant phase's weights, not from
    the annealed ones.

    ```
    W, C, A, D = warmup_steps, cooldown_steps, annealing_start, annealing_steps
    lr(s) = max_lr * s / W                                   s < W
          = const + (max_lr - const) * g((s - W) / C)        W <= s < W + C
          = const                                            W + C <= s < A
          = min_lr + (const - min_lr) * f((s - A) / D)       A <= s < A + D
          = min_lr                                           s >= A + D
    g(p) = (1 + cos(pi p)) / 2                                   "cosine"
         = (1/sqrt(1 + alpha p) - 1/sqrt(1 + alpha))
           / (1 - 1/sqrt(1 + alpha))                             "inv_sqrt"
    ```

    `f` is one of the `WarmupStableDecay` shapes (default exponential).

    Args:
        max_learning_rate: the peak, a float > 0.
        constant_learning_rate: the constant phase's value, a float in
            [0, max_learning_rate].
        warmup_steps: warmup length in steps, an int >= 0.
        cooldown_steps: cooldown length in steps, an int >= 0.
        cooldown_shape: `"cosine"` (default; Singh et al.'s "Inf Cos") or
            `"inv_sqrt"` (Ibrahim et al.).
        inv_sqrt_alpha: the inverse-square-root cooldown's steepness
            `alpha` over the window, a float > 0. Defaults to `10.0`.
        annealing_start: the step the annealing starts at, an int >=
            warmup_steps + cooldown_steps, or `None` (default: never). Set
            it when you branch off a checkpoint: `with_annealing(step)`.
        annealing_steps: annealing length in steps, an int >= 0.
            Defaults to `0` (a drop straight to `min_learning_rate`).
        annealing_shape: the annealing's shape, as in `WarmupStableDecay`.
            Defaults to `"exponential"` (Singh et al.).
        min_learning_rate: the annealing's floor, a float in
            [0, constant_learning_rate]. Defaults to `0.0`.
        half_life: for the exponential annealing: the half-life in steps.
            Defaults to a tenth of `annealing_steps`.
        name: the schedule's name.

    Example:

    >>> import keras, keras_batchopt
    >>> schedule = keras_batchopt.schedules.InfiniteSchedule(
    ...     max_learning_rate=1e-3, constant_learning_rate=3e-4,
    ...     warmup_steps=10, cooldown_steps=90)
    >>> [round(float(schedule(s)), 6) for s in (5, 10, 55, 100, 10**6)]
    [0.0005, 0.001, 0.00065, 0.0003, 0.0003]
    >>> annealed = schedule.with_annealing(2000, annealing_steps=100)
    >>> [round(float(annealed(s)), 6) for s in (1999, 2000, 2100)]
    [0.0003, 0.0003, 0.0]

    Note:
        Neither paper publishes the exact inverse-square-root formula or
        its `alpha`; `h(p) = 1/sqrt(1 + alpha p)` rescaled to hit both
        endpoints is our reading of Ibrahim et al., and `alpha = 10` our
        default. The annealing start is a constructor argument because a
        compiled training step reads the schedule when it is traced: to
        anneal, compile the model (or a copy restored from a constant-phase
        checkpoint) with `schedule.with_annealing(step)`.

    References:
        - Ibrahim et al., 2024, [Simple and Scalable Strategies to
          Continually Pre-train Large Language Models](
          https://arxiv.org/abs/2403.08763)
        - Singh et al., 2025, [Beyond Cosine Decay: On the effectiveness of
          Infinite Learning Rate Schedule for Continual Pre-training](
          https://arxiv.org/abs/2503.02844)
    """

    def __init__(
        self,
        max_learning_rate,
        constant_learning_rate,
        warmup_steps,
        cooldown_steps,
        cooldown_shape="cosine",
        inv_sqrt_alpha=10.0,
        annealing_start=None,
        annealing_steps=0,
        annealing_shape="exponential",
        min_learning_rate=0.0,
        half_life=None,
        name="InfiniteSchedule",
    ):
        self.max_learning_rate = validation.check_positive(
            "max_learning_rate", max_learning_rate
        )
        self.constant_learning_rate = validation.check_in_interval(
            "constant_learning_rate",
            constant_learning_rate,
            0.0,
            self.max_learning_rate,
            True,
            True,
        )
        self.warmup_steps = shapes.check_steps(
            "warmup_steps", warmup_steps, None
        )
        self.cooldown_steps = shapes.check_steps(
            "cooldown_steps", cooldown_steps, None
        )
        self.cooldown_shape = validation.check_one_of(
            "cooldown_shape", cooldown_shape, COOLDOWN_SHAPES
        )
        self.inv_sqrt_alpha = validation.check_positive(
            "inv_sqrt_alpha", inv_sqrt_alpha
        )
        constant_start = self.warmup_steps + self.cooldown_steps
        if annealing_start is not None:
            annealing_start = shapes.check_steps(
                "annealing_start", annealing_start, None
            )
            if annealing_start < constant_start:
                raise ValueError(
                    "Argument `annealing_start` must be None or an int >= "
                    f"warmup_steps + cooldown_steps = {constant_start}. "
                    f"Received: annealing_start={annealing_start!r}"
                )
        self.annealing_start = annealing_start
        self.annealing_steps = shapes.check_steps(
            "annealing_steps", annealing_steps, None
        )
        self.annealing_shape = validation.check_one_of(
            "annealing_shape", annealing_shape, shapes.DECAY_SHAPES
        )
        self.min_learning_rate = validation.check_in_interval(
            "min_learning_rate",
            min_learning_rate,
            0.0,
            self.constant_learning_rate,
            True,
            True,
        )
        self.half_life = half_life
        self._half_life = shapes.check_half_life(
            half_life, self.annealing_steps
        )
        self.name = name

    def with_annealing(self, annealing_start, annealing_steps=None):
        """A copy of this schedule that anneals from `annealing_start`."""
        config = self.get_config()
        config["annealing_start"] = annealing_start
        if annealing_steps is not None:
            config["annealing_steps"] = annealing_steps
        return self.__class__.from_config(config)

    def __call__(self, step):
        with keras.name_scope(self.name):
            step = ops.cast(step, "float32")
            warmup = shapes.linear_warmup(
                step, self.warmup_steps, self.max_learning_rate
            )
            p = shapes.progress(step, self.warmup_steps, self.cooldown_steps)
            if self.cooldown_shape == "cosine":
                fraction = shapes.decay_fraction("cosine", p)
            else:
                fraction = _inv_sqrt_fraction(p, self.inv_sqrt_alpha)
            high, low = self.max_learning_rate, self.constant_learning_rate
            if self.cooldown_steps == 0:
                fraction = ops.zeros_like(p)
            lr = low + (high - low) * fraction
            if self.annealing_start is not None:
                annealed = shapes.decay(
                    self.annealing_shape,
                    step,
                    self.annealing_start,
                    self.annealing_steps,
                    self.constant_learning_rate,
                    self.min_learning_rate,
                    self._half_life,
                )
                if self.annealing_steps == 0:
                    annealed = ops.full_like(p, self.min_learning_rate)
                lr = ops.where(step >= self.annealing_start, annealed, lr)
            return ops.where(step < self.warmup_steps, warmup, lr)

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            "constant_learning_rate": self.constant_learning_rate,
            "warmup_steps": self.warmup_steps,
            "cooldown_steps": self.cooldown_steps,
            "cooldown_shape": self.cooldown_shape,
            "inv_sqrt_alpha": self.inv_sqrt_alpha,
            "annealing_start": self.annealing_start,
            "annealing_steps": self.annealing_steps,
            "annealing_shape": self.annealing_shape,
            "min_learning_rate": self.min_learning_rate,
            "half_life": self.half_life,
            "name": self.name,
        }
