"""Block averaging of a Hutchinson Hessian-diagonal estimate.

AdaHessian smooths `|H z|` over blocks of coordinates that share curvature
(the taps of one convolution filter, the inputs of one dense unit) before
it squares it into its moving average. The axes are those of Keras's
kernel layouts: a convolution kernel is `(*spatial, in, out)` (also for
depthwise and transposed convolutions, whose last two axes differ in
meaning but whose spatial axes still come first), a dense kernel
`(in, out)`.
"""

import numbers

from keras import ops

MODES = ("spatial", "spatial_and_input", "none")


def check_mode(value):
    """`value` is one of MODES or an integer block size >= 1."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        if value >= 1:
            return int(value)
    elif value in MODES:
        return value
    raise ValueError(
        "Argument `hessian_averaging` must be one of 'spatial', "
        "'spatial_and_input', 'none' or an integer block size >= 1. "
        f"Received: hessian_averaging={value!r}"
    )


def averaging_axes(shape, mode):
    """The axes averaged over for a variable of `shape` (a tuple), or an
    integer block size, or None for no averaging."""
    rank = len(shape)
    if mode == "none" or rank <= 1:
        return None
    if isinstance(mode, int):
        return mode if mode > 1 else None
    if rank == 2:
        # The instruction version averages each output unit's row over its
        # inputs: axis 0 of a Keras (in, out) kernel.
        return (0,) if mode == "spatial_and_input" else None
    return tuple(range(rank - 2))


def check_block_size(shape, block_size, path):
    """A block size must divide the size of a variable of rank >= 2."""
    if len(shape) <= 1:
        return
    size = 1
    for dim in shape:
        size *= int(dim)
    if size % block_size:
        raise ValueError(
            f"Argument `hessian_averaging`={block_size} must divide the "
            "number of elements of every variable of rank >= 2. Received: "
            f"variable {path} of shape {tuple(shape)} ({size} elements)."
        )


def average_blocks(d, axes):
    """`d` averaged over `axes` (a tuple) or over contiguous blocks of
    `axes` elements (an int) of the flattened array, broadcast back."""
    if axes is None:
        return d
    if isinstance(axes, int):
        shape = ops.shape(d)
        blocks = ops.reshape(d, (-1, axes))
        means = ops.mean(blocks, axis=1, keepdims=True)
        return ops.reshape(ops.broadcast_to(means, ops.shape(blocks)), shape)
    return ops.broadcast_to(ops.mean(d, axis=axes, keepdims=True), ops.shape(d))
