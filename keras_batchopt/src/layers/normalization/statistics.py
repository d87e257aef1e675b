"""Shared math of the normalization layers, in float32.

Statistics of float16 and bfloat16 inputs are taken in float32: a float16
sum of squares overflows above 256 and bfloat16 keeps 8 bits of mantissa.
Each layer upcasts once, computes, and casts its output back.
"""

from keras import backend
from keras import ops


def upcast(x):
    """``x`` in float32 if it is float16 or bfloat16, else unchanged
    (float64 stays float64)."""
    x = ops.convert_to_tensor(x)
    if backend.standardize_dtype(x.dtype) in ("float16", "bfloat16"):
        return ops.cast(x, "float32")
    return x


def channel_shape(ndim, axis, size):
    """The broadcast shape of a per-channel vector: 1 except at ``axis``."""
    shape = [1] * ndim
    shape[axis] = size
    return shape


def reduction_axes(ndim, axis, keep=(0,)):
    """Every axis but ``axis`` and those in ``keep``."""
    return [i for i in range(ndim) if i != axis and i not in keep]


def unbiased(variance, count):
    """PyTorch's running-variance correction ``n / (n - 1)`` (1 if n < 2)."""
    count = ops.cast(count, variance.dtype)
    # max(n - 1, 1) as 1 + relu(n - 2): Keras's `maximum` promotes float64
    # to float32.
    return variance * count / (1.0 + ops.relu(count - 2.0))


def moving_average(variable, value, momentum):
    """``variable <- momentum * variable + (1 - momentum) * value``.

    Keras's convention: `momentum` weighs the old value. PyTorch's
    `momentum=0.1` is Keras's `momentum=0.9`.
    """
    variable.assign(
        variable * momentum + ops.cast(value, variable.dtype) * (1 - momentum)
    )


def scale_and_offset(mean, variance, gamma, beta, epsilon):
    """``a, b`` with ``(x - mean) / sqrt(variance + eps) * gamma + beta``
    equal to ``x * a + b``: one pass over ``x`` to normalize it. A `mean`
    of None is no centering; ``b`` is then `beta`, None without one."""
    scale = ops.rsqrt(variance + epsilon)
    if gamma is not None:
        scale = scale * gamma
    if mean is None:
        return scale, beta
    offset = -mean * scale
    if beta is not None:
        offset = offset + beta
    return scale, offset


def mean(x, axis, keepdims=False):
    """`ops.mean` that keeps float64 exact: Keras's computes a float64 mean
    in float32 (its `result_type(float64, "float32")` is float32)."""
    axes = [axis] if isinstance(axis, int) else list(axis)
    count = 1
    for i in axes:
        count = count * ops.shape(x)[i]
    return ops.sum(x, axes, keepdims=keepdims) / ops.cast(count, x.dtype)


def to_rows(x, axis):
    """`x` as `(rows, channels)` with the channel axis last, and a function
    that maps such rows back to the layout and shape of `x`."""
    rank = len(x.shape)
    moved = x if axis == rank - 1 else ops.moveaxis(x, axis, -1)
    shape = ops.shape(moved)
    rows = ops.reshape(moved, (-1, shape[-1]))

    def back(y):
        y = ops.reshape(y, shape)
        return y if axis == rank - 1 else ops.moveaxis(y, -1, axis)

    return rows, back


def row_weights(mask, rows_like):
    """A Keras mask (True for a real token; the input's shape without the
    channel axis) as float weights of shape `(rows, 1)`, or None."""
    if mask is None:
        return None
    return ops.reshape(ops.cast(mask, rows_like.dtype), (-1, 1))


def masked_channel_mean(rows, weights):
    """The per-channel mean of `rows` over the real tokens (all rows when
    `weights` is None); 0 when a batch holds no real token."""
    if weights is None:
        return mean(rows, 0)
    count = ops.maximum(ops.sum(weights), 1.0)
    return ops.sum(rows * weights, 0) / count
