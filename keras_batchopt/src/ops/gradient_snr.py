"""The gradient signal-to-noise ratio of SGD-SaI (and its torch fast path)."""

from keras import ops


def gradient_snr(gradient, epsilon, size):
    """`||g|| / (std(g) + epsilon)` in float32, with the unbiased std.

    `size` is the number of entries (static: the variable's).

    A tensor of one element (or none) has no unbiased std (PyTorch returns
    NaN, which the official code replaces with 0): its std is taken as 0.
    """
    g = ops.cast(gradient, "float32")
    norm = ops.sqrt(ops.sum(ops.square(g)))
    if size <= 1:
        return norm / epsilon
    centered = g - ops.mean(g)
    std = ops.sqrt(ops.sum(ops.square(centered)) / (size - 1))
    return norm / (std + epsilon)
