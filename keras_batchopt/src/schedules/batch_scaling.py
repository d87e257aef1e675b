"""Learning rate and training length as functions of the batch size."""

import math
import numbers

import keras

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export

RULES = ("linear", "sqrt", "auto")

# Keras optimizers by the rule "auto" gives them: linear for the SGD family,
# square root for the adaptive (per-coordinate or normalized) ones.
# Granziol et al. derive the two rules for SGD and for Adam; the others
# follow the family they belong to. Our optimizers declare
# `batch_scaling_rule` themselves.
_KERAS_RULES = {
    "SGD": "linear",
    "Adam": "sqrt",
    "AdamW": "sqrt",
    "Adamax": "sqrt",
    "Nadam": "sqrt",
    "Adagrad": "sqrt",
    "Adadelta": "sqrt",
    "RMSprop": "sqrt",
    "Adafactor": "sqrt",
    "Lamb": "sqrt",
    "Lion": "sqrt",
    "Ftrl": "sqrt",
}


def _unwrap(optimizer):
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    return optimizer


def rule_for(optimizer):
    """The "auto" rule of an optimizer instance, class or class name."""
    optimizer = _unwrap(optimizer)
    cls = optimizer if isinstance(optimizer, type) else type(optimizer)
    if isinstance(optimizer, str):
        names = [optimizer]
        declared = None
    else:
        names = [c.__name__ for c in cls.__mro__]
        declared = getattr(cls, "batch_scaling_rule", None)
    if declared is not None:
        return declared
    for name in names:
        if name in _KERAS_RULES:
            return _KERAS_RULES[name]
    shown = optimizer if isinstance(optimizer, str) else cls.__name__
    raise ValueError(
        "Argument `optimizer` must be one whose batch-size rule is known "
        "(SGD, LARS and SGD-SaI scale linearly; Adam-family, LAMB, Adan "
        "and other adaptive methods by the square root), or pass "
        "rule='linear' or rule='sqrt'. Received: "
        f"optimizer={shown!r}"
    )


def effective_batch_size(
    batch_size, gradient_accumulation_steps=None, num_replicas=1
):
    """Samples per optimizer update: batch x accumulation x replicas."""
    batch_size = validation.check_positive_int("batch_size", batch_size)
    steps = validation.check_positive_int_or_none(
        "gradient_accumulation_steps", gradient_accumulation_steps
    )
    replicas = validation.check_positive_int("num_replicas", num_replicas)
    return batch_size * (steps or 1) * replicas


@keras_batchopt_export("keras_batchopt.schedules.scale_learning_rate")
def scale_learning_rate(
    base_learning_rate,
    batch_size,
    base_batch_size=256,
    rule="auto",
    optimizer=None,
    gradient_accumulation_steps=None,
    num_replicas=1,
):
    """Scales a learning rate tuned at one batch size to another.

    ```
    B = batch_size * gradient_accumulation_steps * num_replicas
    lr = base_learning_rate * (B / base_batch_size)          "linear"
    lr = base_learning_rate * sqrt(B / base_batch_size)      "sqrt"
    ```

    The linear rule (Goyal et al.) suits SGD and its relatives; the square
    root rule suits adaptive methods. Granziol et al. derive both from
    random-matrix theory as the scaling of the *largest* stable learning
    rate, up to a threshold batch size beyond which neither holds. Use
    `GradualWarmup` with the linear rule, as Goyal et al. do.

    Args:
        base_learning_rate: the learning rate tuned at `base_batch_size`, a
            float > 0.
        batch_size: the new per-replica batch size, an int >= 1.
        base_batch_size: the batch size `base_learning_rate` was tuned at,
            an int >= 1. Defaults to `256`.
        rule: `"linear"`, `"sqrt"`, or `"auto"` (default): the optimizer's
            rule, linear for SGD, LARS and SGD-SaI, square root for Adam,
            AdamW, LAMB, Adan, Adagrad, RMSprop and the other adaptive
            methods. Our optimizers declare theirs in `batch_scaling_rule`.
        optimizer: for `"auto"`: an optimizer instance, class or class
            name. An instance's `gradient_accumulation_steps` is used when
            the argument is not given; a `LossScaleOptimizer` is unwrapped.
        gradient_accumulation_steps: micro-batches per update, an int >= 1
            or `None`.
        num_replicas: data-parallel replicas, each with `batch_size`
            samples, an int >= 1. Defaults to `1`.

    Returns:
        The scaled learning rate, a float.

    Example:

    >>> import keras, keras_batchopt
    >>> keras_batchopt.schedules.scale_learning_rate(
    ...     0.1, batch_size=1024, base_batch_size=256,
    ...     optimizer=keras.optimizers.SGD())
    0.4
    >>> keras_batchopt.schedules.scale_learning_rate(
    ...     1e-3, batch_size=1024, base_batch_size=256, optimizer="AdamW")
    0.002

    References:
        - Goyal et al., 2017, [Accurate, Large Minibatch SGD: Training
          ImageNet in 1 Hour](https://arxiv.org/abs/1706.02677)
        - Granziol et al., 2022, [Learning Rates as a Function of Batch
          Size: A Random Matrix Theory Approach to Neural Network
          Training](https://arxiv.org/abs/2006.09092)
    """
    base_learning_rate = validation.check_positive(
        "base_learning_rate", base_learning_rate
    )
    base_batch_size = validation.check_positive_int(
        "base_batch_size", base_batch_size
    )
    validation.check_one_of("rule", rule, RULES)
    effective_batch_size(batch_size, gradient_accumulation_steps, num_replicas)
    if rule == "auto":
        if optimizer is None:
            raise ValueError(
                "Argument `optimizer` is needed when rule='auto'. "
                "Received: optimizer=None"
            )
        rule = rule_for(optimizer)
    if gradient_accumulation_steps is None and optimizer is not None:
        inner = _unwrap(optimizer)
        if isinstance(inner, keras.optimizers.Optimizer):
            gradient_accumulation_steps = inner.gradient_accumulation_steps
    ratio = (
        effective_batch_size(
            batch_size, gradient_accumulation_steps, num_replicas
        )
        / base_batch_size
    )
    return base_learning_rate * (
        ratio if rule == "linear" else math.sqrt(ratio)
    )


@keras_batchopt_export("keras_batchopt.schedules.scale_training_length")
def scale_training_length(
    length,
    batch_size,
    base_batch_size=256,
    gradient_accumulation_steps=None,
    num_replicas=1,
):
    """ "Train longer": keeps the number of updates of the base run.

    Hoffer et al. close most of the large-batch generalization gap by
    "regime adaptation": training with a batch `k` times larger for `k`
    times more epochs, so the number of updates stays the base run's.

    ```
    B = batch_size * gradient_accumulation_steps * num_replicas
    length' = length * B / base_batch_size
    ```

    Args:
        length: epochs (or any count of passes over the data, such as steps
            computed from an epoch budget at the new batch size), an int or
            float > 0.
        batch_size: the new per-replica batch size, an int >= 1.
        base_batch_size: the batch size of the base run, an int >= 1.
        gradient_accumulation_steps: micro-batches per update, or `None`.
        num_replicas: data-parallel replicas, an int >= 1.

    Returns:
        The scaled length: an int (rounded up) for an int `length`, else a
        float.

    Example:

    >>> import keras_batchopt
    >>> keras_batchopt.schedules.scale_training_length(
    ...     10, batch_size=4096, base_batch_size=256)
    160

    References:
        - Hoffer et al., 2017, [Train longer, generalize better: closing
          the generalization gap in large batch training of neural
          networks](https://arxiv.org/abs/1705.08741)
    """
    is_int = isinstance(length, numbers.Integral)
    length = validation.check_positive("length", length)
    base_batch_size = validation.check_positive_int(
        "base_batch_size", base_batch_size
    )
    scaled = (
        length
        * effective_batch_size(
            batch_size, gradient_accumulation_steps, num_replicas
        )
        / base_batch_size
    )
    return math.ceil(scaled - 1e-9) if is_int else scaled
