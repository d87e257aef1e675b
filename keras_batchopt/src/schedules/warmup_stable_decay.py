import keras
from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.schedules import shapes


@keras_batchopt_export("keras_batchopt.schedules.WarmupStableDecay")
class WarmupStableDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Warmup-stable-decay (WSD) learning-rate schedule (MiniCPM).

    A linear warmup from 0, a long constant phase, and a short decay to a
    floor. Because the learning rate is constant until the decay, one run
    in the stable phase can be branched into decays of any length ("the
    loss drops sharply during the decay"); MiniCPM found about 10% of the
    steps enough for the decay.

    ```
    W, S, D = warmup_steps, stable_steps, decay_steps
    lr(s) = learning_rate * s / W                            s < W
          = learning_rate                                    W <= s < W + S
          = min_lr + (learning_rate - min_lr) * f((s-W-S)/D)  W+S <= s < W+S+D
          = min_lr                                           s >= W + S + D
    f(p) = 1 - p              "linear"
         = (1 + cos(pi p))/2  "cosine"
         = 1 - sqrt(p)        "1-sqrt"
         = 1 - p^2            "1-square"
         = (2^(-p D/h) - 2^(-D/h)) / (1 - 2^(-D/h))   "exponential",
                                                   h = half_life
    ```

    Every shape starts at `learning_rate` and ends exactly on
    `min_learning_rate`, so the schedule is continuous from the end of the
    warmup on.

    Args:
        learning_rate: the peak (stable-phase) learning rate, a float > 0.
        warmup_steps: the warmup length: an int >= 0 (steps), or a float in
            [0, 1], a fraction of `total_steps`.
        decay_steps: the decay length, in the same units.
        stable_steps: the constant phase's length, in the same units.
            Defaults to `None`: `total_steps - warmup_steps - decay_steps`.
        total_steps: the run's length in steps, an int >= 1. Needed for
            fractions and for `stable_steps=None`.
        decay_shape: one of `"1-sqrt"` (default, as in pytorch-optimizer
            and Hägele et al. 2024), `"linear"`, `"cosine"`, `"1-square"`,
            `"exponential"` (MiniCPM).
        min_learning_rate: the floor, a float in [0, learning_rate].
            Defaults to `0.0`.
        half_life: for `"exponential"`: the half-life in steps, a float
            > 0. Defaults to a tenth of `decay_steps`.
        name: the schedule's name.

    Example:

    >>> import keras, keras_batchopt
    >>> schedule = keras_batchopt.schedules.WarmupStableDecay(
    ...     1e-3, warmup_steps=0.1, decay_steps=0.2, total_steps=100,
    ...     min_learning_rate=1e-5)
    >>> [round(float(schedule(s)), 6) for s in (0, 5, 10, 50, 90, 100)]
    [0.0, 0.0005, 0.001, 0.001, 0.0003, 1e-05]
    >>> optimizer = keras.optimizers.AdamW(learning_rate=schedule)

    Note:
        pytorch-optimizer's `get_wsd_schedule` agrees with this schedule for
        `"cosine"`. For `"1-sqrt"`, `"linear"` and `"1-square"` it decays
        towards 0 and jumps *up* to the floor when the decay ends; here
        those shapes are rescaled to end on the floor. MiniCPM's
        exponential decay `0.5^((s - W - S) / h)` never reaches a floor;
        here it is shifted and rescaled to end on it (a shift of
        `2^(-D/h)`, 0.1% of the peak with the default half-life).
        Keras optimizers call the schedule with `iterations`, which starts
        at 0, so the first step takes learning rate 0 when `warmup_steps`
        is positive, as in PyTorch's `LambdaLR`.

    References:
        - Hu et al., 2024, [MiniCPM: Unveiling the Potential of Small
          Language Models with Scalable Training Strategies](
          https://arxiv.org/abs/2404.06395)
        - Hägele et al., 2024, [Scaling Laws and Compute-Optimal Training
          Beyond Fixed Training Durations](
          https://arxiv.org/abs/2405.18392)
    """

    def __init__(
        self,
        learning_rate,
        warmup_steps,
        decay_steps,
        stable_steps=None,
        total_steps=None,
        decay_shape="1-sqrt",
        min_learning_rate=0.0,
        half_life=None,
        name="WarmupStableDecay",
    ):
        self.learning_rate = validation.check_positive(
            "learning_rate", learning_rate
        )
        self.total_steps = shapes.check_total_steps(total_steps)
        self.warmup_steps = warmup_steps
        self.decay_steps = decay_steps
        self.stable_steps = stable_steps
        self._warmup = shapes.check_steps(
            "warmup_steps", warmup_steps, self.total_steps
        )
        self._decay = shapes.check_steps(
            "decay_steps", decay_steps, self.total_steps
        )
        if stable_steps is None:
            if self.total_steps is None:
                raise ValueError(
                    "Argument `stable_steps` must be given when "
                    "`total_steps` is None. Received: stable_steps=None"
                )
            self._stable = self.total_steps - self._warmup - self._decay
            if self._stable < 0:
                raise ValueError(
                    "Argument `total_steps` must be >= warmup_steps + "
                    f"decay_steps = {self._warmup + self._decay}. Received: "
                    f"total_steps={self.total_steps}"
                )
        else:
            self._stable = shapes.check_steps(
                "stable_steps", stable_steps, self.total_steps
            )
        self.decay_shape = validation.check_one_of(
            "decay_shape", decay_shape, shapes.DECAY_SHAPES
        )
        self.min_learning_rate = validation.check_in_interval(
            "min_learning_rate",
            min_learning_rate,
            0.0,
            self.learning_rate,
            True,
            True,
        )
        self.half_life = half_life
        self._half_life = shapes.check_half_life(half_life, self._decay)
        self.name = name

    def __call__(self, step):
        with keras.name_scope(self.name):
            step = ops.cast(step, "float32")
            decay_start = self._warmup + self._stable
            warmup = shapes.linear_warmup(
                step, self._warmup, self.learning_rate
            )
            decay = shapes.decay(
                self.decay_shape,
                step,
                decay_start,
                self._decay,
                self.learning_rate,
                self.min_learning_rate,
                self._half_life,
            )
            return ops.where(step < self._warmup, warmup, decay)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "warmup_steps": self.warmup_steps,
            "decay_steps": self.decay_steps,
            "stable_steps": self.stable_steps,
            "total_steps": self.total_steps,
            "decay_shape": self.decay_shape,
            "min_learning_rate": self.min_learning_rate,
            "half_life": self.half_life,
            "name": self.name,
        }
