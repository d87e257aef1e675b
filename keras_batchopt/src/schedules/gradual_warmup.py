import keras
from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.schedules import shapes

LearningRateSchedule = keras.optimizers.schedules.LearningRateSchedule


def _check_schedule(schedule):
    if isinstance(schedule, LearningRateSchedule):
        return schedule
    return validation.check_positive("schedule", schedule)


def _value(schedule, step):
    if isinstance(schedule, LearningRateSchedule):
        return ops.cast(schedule(step), "float32")
    return ops.full_like(ops.cast(step, "float32"), schedule)


@keras_batchopt_export("keras_batchopt.schedules.GradualWarmup")
class GradualWarmup(LearningRateSchedule):
    """Gradual warmup in front of any schedule (Goyal et al.).

    When the learning rate is scaled up with the batch size, the first
    steps are unstable; Goyal et al. start from the small-batch learning
    rate and raise it linearly to the scaled one over the first epochs
    (5 for ImageNet), then follow the main schedule:

    ```
    target = schedule(0)  if offset  else  schedule(W)
    lr(s) = start + (target - start) * s / W     s < W
          = schedule(s - W)  if offset           s >= W
            schedule(s)      otherwise
    ```

    Args:
        schedule: the main schedule, a `LearningRateSchedule`, or a float
            > 0 (a constant learning rate).
        warmup_steps: the warmup length in steps, an int >= 0.
        start_learning_rate: the first step's learning rate, a float >= 0.
            Goyal et al. use the unscaled, small-batch learning rate.
            Defaults to `0.0`.
        offset: `True` (default) starts the main schedule after the warmup
            (it sees `step - warmup_steps`, as Keras's `CosineDecay` does
            with `warmup_steps`); `False` passes the step unchanged, so the
            main schedule keeps its own clock and the warmup replaces its
            first `warmup_steps`.
        name: the schedule's name.

    Example:

    >>> import keras, keras_batchopt
    >>> base = keras_batchopt.schedules.scale_learning_rate(
    ...     0.1, batch_size=8192, base_batch_size=256, rule="linear")
    >>> main = keras.optimizers.schedules.PiecewiseConstantDecay(
    ...     [3000], [base, base / 10])
    >>> schedule = keras_batchopt.schedules.GradualWarmup(
    ...     main, warmup_steps=500, start_learning_rate=0.1)
    >>> [round(float(schedule(s)), 4) for s in (0, 250, 500, 3500, 3600)]
    [0.1, 1.65, 3.2, 3.2, 0.32]

    Note:
        PyTorch's widely copied `GradualWarmupScheduler` multiplies the
        base learning rate by a factor; here the warmup is written in
        learning rates, which reads the same with any main schedule.

    References:
        - Goyal et al., 2017, [Accurate, Large Minibatch SGD: Training
          ImageNet in 1 Hour](https://arxiv.org/abs/1706.02677)
    """

    def __init__(
        self,
        schedule,
        warmup_steps,
        start_learning_rate=0.0,
        offset=True,
        name="GradualWarmup",
    ):
        self.schedule = _check_schedule(schedule)
        self.warmup_steps = shapes.check_steps(
            "warmup_steps", warmup_steps, None
        )
        self.start_learning_rate = validation.check_non_negative(
            "start_learning_rate", start_learning_rate
        )
        self.offset = validation.check_bool("offset", offset)
        self.name = name

    def __call__(self, step):
        with keras.name_scope(self.name):
            step = ops.cast(step, "float32")
            warmup = float(self.warmup_steps)
            if self.offset:
                main = _value(self.schedule, ops.maximum(step - warmup, 0.0))
                target = _value(self.schedule, ops.zeros_like(step))
            else:
                main = _value(self.schedule, step)
                target = _value(self.schedule, ops.full_like(step, warmup))
            ramp = shapes.linear_warmup(
                step, self.warmup_steps, target, self.start_learning_rate
            )
            return ops.where(step < warmup, ramp, main)

    def get_config(self):
        schedule = self.schedule
        if isinstance(schedule, LearningRateSchedule):
            schedule = keras.saving.serialize_keras_object(schedule)
        return {
            "schedule": schedule,
            "warmup_steps": self.warmup_steps,
            "start_learning_rate": self.start_learning_rate,
            "offset": self.offset,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config["schedule"], dict):
            config["schedule"] = keras.saving.deserialize_keras_object(
                config["schedule"]
            )
        return cls(**config)
