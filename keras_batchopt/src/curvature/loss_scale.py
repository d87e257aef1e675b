"""What the Hessian training steps do about a `LossScaleOptimizer`: find
the Hessian optimizer it wraps, and skip the step on an overflow."""

import keras


def hessian_optimizer(optimizer):
    """The optimizer that wants Hessian-vector products (unwrapping a
    `LossScaleOptimizer`), or None."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return inner if getattr(inner, "needs_hessian", False) else None


def skip_step_on_overflow(optimizer, grads, hvps):
    """Under a `LossScaleOptimizer`, a non-finite Hessian-vector product is
    an overflow of the scaled loss like a non-finite gradient: the
    gradients are made non-finite too, so that the wrapper skips the step
    and lowers the scale instead of the Hessian average keeping an inf."""
    if not hasattr(optimizer, "inner_optimizer"):
        return grads
    finite = None
    for h in hvps:
        ok = keras.ops.all(keras.ops.isfinite(h))
        finite = ok if finite is None else keras.ops.logical_and(finite, ok)
    return [
        keras.ops.where(finite, g, keras.ops.full_like(g, float("nan")))
        for g in grads
    ]
