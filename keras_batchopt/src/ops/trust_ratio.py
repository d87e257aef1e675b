"""The layer-wise trust ratio shared by LAMB and LARS (and their fast paths).

Both optimizers scale a variable's update by a per-tensor scalar built from
two L2 norms. The functions are plain `keras.ops`, so the same code runs in
the generic `update_step` on every backend and inside the compiled torch
kernels (`torch.compile` traces `keras.ops` on torch tensors).
"""

from keras import ops


def l2_norm(x):
    """The L2 norm of a whole tensor, computed in float32.

    Casting first keeps the sum of squares from overflowing (float16 tops
    out at 65504, so any entry above 256 would give `inf`) or losing digits
    (bfloat16 has 8 significant bits) under mixed precision.
    """
    x = ops.cast(x, "float32")
    return ops.sqrt(ops.sum(ops.square(x)))


def trust_ratio(
    param_norm, update_norm, denominator=None, coefficient=1.0, epsilon=0.0
):
    """Returns ``coefficient * param_norm / (denominator + epsilon)``.

    The ratio is 1 wherever ``param_norm`` or ``update_norm`` is 0, as in
    the LAMB and LARS papers and their reference code: a freshly zeroed
    variable (a bias) or a zero update takes the unscaled step instead of
    none (or a division by zero).

    Args:
        param_norm: the float32 norm of the variable, ``||w||``.
        update_norm: the float32 norm the zero-guard looks at, ``||u||``.
        denominator: what ``||w||`` is divided by; defaults to
            ``update_norm``. LARS in its paper form passes
            ``||g|| + weight_decay * ||w||`` here.
        coefficient: multiplies the ratio (LARS's trust coefficient, `eta`).
        epsilon: added to the denominator.
    """
    if denominator is None:
        denominator = update_norm
    usable = ops.logical_and(
        ops.greater(param_norm, 0.0), ops.greater(update_norm, 0.0)
    )
    # The denominator is replaced where unused, so no inf or NaN is formed
    # even in the branch `where` discards.
    safe = ops.where(usable, denominator + epsilon, ops.ones_like(denominator))
    return ops.where(
        usable, coefficient * param_norm / safe, ops.ones_like(param_norm)
    )


def larc_clip(ratio, learning_rate):
    """LARC's clipping: ``min(ratio / learning_rate, 1)``.

    The effective step size ``learning_rate * ratio`` then never exceeds
    the global learning rate (NVIDIA apex `LARC`, clip mode; timm's
    `trust_clip`). A zero learning rate gives a ratio of 1 and a zero step.
    """
    return ops.minimum(ratio / learning_rate, 1.0)
