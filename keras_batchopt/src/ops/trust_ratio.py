"""The layer-wise trust ratio shared by LAMB and LARS (and their fast paths).

Both optimizers scale a variable's update by a per-tensor scalar built from
two L2 norms. The functions use `keras.ops` by default, so the same code
runs in the generic `update_step` on every backend; the torch fast paths
pass `xp=torch` so that `torch.compile` traces plain torch functions (it
cannot trace the `keras.ops` of every supported Keras version).
"""

import math

from keras import ops

from keras_batchopt.src.ops import xla_hints

# Entries summed per block before the blocks are added up under XLA: at
# most the window of XLA's tree-reduction rewrite, so that the first sum is
# left alone by it (see `sum_of_squares`).
_BLOCK = 32


def sum_of_squares(x):
    """`sum(x**2)` over the whole tensor, computed in float32.

    Casting first keeps the sum from overflowing (float16 tops out at
    65504, so any entry above 256 would give `inf`) or losing digits
    (bfloat16 has 8 significant bits) under mixed precision.

    Under TensorFlow's XLA the sum runs in two stages: each block of up to 32
    consecutive entries is summed where the squares are computed, then the
    block sums are added up (an optimization barrier keeps XLA from
    merging the two sums back into one). XLA:CPU splits a sum over a
    dimension longer than 32 into a windowed sum (for accuracy) that it
    cannot fuse with the squaring, so the one-stage form writes every
    square to a full-size temporary and reads it back, in a slow kernel
    (about 5x slower on a 4096 x 1024 tensor). jaxlib's XLA fuses the
    one-stage form into a single library kernel, faster than two stages
    there. Both forms add in a different order, within float32 rounding.
    """
    x = ops.cast(x, "float32")
    if not xla_hints.sum_in_blocks() or None in tuple(x.shape):
        return ops.sum(ops.square(x))
    size = math.prod(x.shape)
    block = math.gcd(size, _BLOCK) if size else 1
    if block == 1:
        return ops.sum(ops.square(x))
    blocks = ops.sum(ops.square(ops.reshape(x, (-1, block))), axis=1)
    (blocks,) = xla_hints.optimization_barrier(blocks)
    return ops.sum(blocks)


def l2_norm(x):
    """The L2 norm of a whole tensor, in float32 (see `sum_of_squares`)."""
    return ops.sqrt(sum_of_squares(x))


def trust_ratio(
    param_norm,
    update_norm,
    denominator=None,
    coefficient=1.0,
    epsilon=0.0,
    xp=ops,
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
        xp: the namespace of array functions: `keras.ops`, or `torch` for
            the torch kernels.
    """
    if denominator is None:
        denominator = update_norm
    usable = xp.logical_and(
        xp.greater(param_norm, 0.0), xp.greater(update_norm, 0.0)
    )
    # The denominator is replaced where unused, so no inf or NaN is formed
    # even in the branch `where` discards.
    safe = xp.where(usable, denominator + epsilon, xp.ones_like(denominator))
    return xp.where(
        usable, coefficient * param_norm / safe, xp.ones_like(param_norm)
    )


def larc_clip(ratio, learning_rate, xp=ops):
    """LARC's clipping: ``min(ratio / learning_rate, 1)``.

    The effective step size ``learning_rate * ratio`` then never exceeds
    the global learning rate (NVIDIA apex `LARC`, clip mode; timm's
    `trust_clip`). A zero learning rate gives a ratio of 1 and a zero step.
    """
    return xp.minimum(ratio / learning_rate, xp.ones_like(ratio))
