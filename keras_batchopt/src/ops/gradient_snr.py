"""The gradient signal-to-noise ratio of SGD-SaI (and its torch fast path)."""

from keras import ops


def gradient_snr(gradient, epsilon, size, official=True):
    """`||g|| / (std(g) + epsilon)` in float32, with the unbiased std.

    `size` is the number of entries (static: the variable's).

    A tensor of one element (or none) has no unbiased std. With `official`,
    its std is taken as 0, as the official code does (PyTorch's NaN
    replaced by 0), which gives `||g|| / epsilon`. Without it, a tensor
    whose std is undefined or exactly 0 gets a gSNR of 1 (no scaling).
    """
    g = ops.cast(gradient, "float32")
    norm = ops.sqrt(ops.sum(ops.square(g)))
    if size <= 1:
        return norm / epsilon if official else ops.ones_like(norm)
    centered = g - ops.mean(g)
    std = ops.sqrt(ops.sum(ops.square(centered)) / (size - 1))
    ratio = norm / (std + epsilon)
    if official:
        return ratio
    return ops.where(ops.greater(std, 0.0), ratio, ops.ones_like(ratio))
