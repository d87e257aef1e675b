import math

from keras import ops


def bias_correction(beta, step, dtype="float32"):
    """Returns ``1 - beta**step`` as a tensor of ``dtype``, to a few ulp.

    Computed as ``-expm1(step * log(beta))``: ``1 - pow(beta, step)`` in
    float32 loses about six significant digits at step 1 for beta near 1
    (``1 - 0.99`` in float32 is ``0.0099999905``), while this form keeps the
    result within a few ulp of the float64 value that PyTorch reference
    code computes in Python.

    Args:
        beta: a Python float in [0, 1).
        step: a scalar tensor, the 1-based step count.
        dtype: the result's dtype.
    """
    step = ops.cast(step, dtype)
    if beta == 0.0:
        return ops.ones_like(step)
    return ops.negative(ops.expm1(step * math.log(beta)))
