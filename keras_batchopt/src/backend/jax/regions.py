"""Region sums and selections on JAX, for RegionNormalization.

Both regions' per-channel sums are one product with the one-hot region
weights `w` (`(positions, 2)`), in full float32 precision
(`Precision.HIGHEST`: no TF32 or bfloat16 passes on GPU and TPU). A
region selection is a `where`, which XLA fuses into its consumer.

Each function has a custom JVP whose transpose is the cheap form of the
other: the tangent of a sum is written as two masked sums, which
reverse-mode turns into a fused `where`; the tangent of a selection is
the product `w @ d_table`, which reverse-mode turns into the product
`w.T @ cotangent`. Without it, XLA on CPU materializes every masked
select of the gradient before reducing it (about twice the memory traffic
of the training step). A custom JVP (not VJP) keeps forward mode, and so
forward-over-reverse Hessian-vector products, working.

Layouts: the channels are last (`x` is viewed as `(positions, C)`) or on
axis 1 (`x` as `(batch, C, positions)`, a batched product).
"""

import functools

import jax
import jax.numpy as jnp

HIGHEST = jax.lax.Precision.HIGHEST


def _weights(mask, axis):
    """One-hot `(rows, 2)` weights (channels last) or `(batch, rows, 2)`
    (channels on axis 1), without gradient."""
    mask = jax.lax.stop_gradient(mask)
    if axis == mask.ndim - 1:
        column = jnp.reshape(mask, (-1, 1))
    else:
        column = jnp.reshape(mask, (mask.shape[0], -1, 1))
    return jnp.concatenate([column, 1.0 - column], axis=-1)


def _sums(x, mask, axis):
    w = _weights(mask, axis)
    if axis == x.ndim - 1:
        rows = jnp.reshape(x, (-1, x.shape[-1]))
        return jnp.matmul(w.T, rows, precision=HIGHEST)
    rows = jnp.reshape(x, (x.shape[0], x.shape[1], -1))
    # (batch, 2, C), summed over the batch.
    per_sample = jnp.einsum("nkr,nck->nrc", w, rows, precision=HIGHEST)
    return jnp.sum(per_sample, axis=0)


def _select(table, mask, axis):
    shape = [1] * mask.ndim
    shape[axis] = -1
    return jnp.where(
        mask > 0.5,
        jnp.reshape(table[0], shape),
        jnp.reshape(table[1], shape),
    )


def _select_by_product(table, mask, axis):
    """`_select` as `w @ table` (exact: one-hot rows): its transpose is a
    product too."""
    w = _weights(mask, axis)
    out_shape = mask.shape[:axis] + table.shape[1:] + mask.shape[axis + 1 :]
    if axis == mask.ndim - 1:
        return jnp.reshape(jnp.matmul(w, table, precision=HIGHEST), out_shape)
    batched = jnp.broadcast_to(table, (mask.shape[0],) + table.shape)
    out = jnp.einsum("nrc,nkr->nck", batched, w, precision=HIGHEST)
    return jnp.reshape(out, out_shape)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _region_sums(x, mask, axis):
    return _sums(x, mask, axis)


@_region_sums.defjvp
def _region_sums_jvp(axis, primals, tangents):
    x, mask = primals
    dx, _ = tangents
    inside = jax.lax.stop_gradient(mask) > 0.5
    axes = tuple(i for i in range(x.ndim) if i != axis)
    zero = jnp.zeros((), dx.dtype)
    tangent = jnp.stack(
        [
            jnp.sum(jnp.where(inside, dx, zero), axes),
            jnp.sum(jnp.where(inside, zero, dx), axes),
        ]
    )
    return _region_sums(x, mask, axis), tangent


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _region_select(table, mask, axis):
    return _select(table, mask, axis)


@_region_select.defjvp
def _region_select_jvp(axis, primals, tangents):
    table, mask = primals
    d_table, _ = tangents
    return (
        _region_select(table, mask, axis),
        _select_by_product(d_table, mask, axis),
    )


def region_sums(x, mask, axis):
    """See `statistics.region_sums`."""
    return _region_sums(x, mask.astype(x.dtype), axis % x.ndim)


def region_select(table, mask, axis, base=None):
    """See `statistics.region_select`."""
    selected = _region_select(table, mask.astype(table.dtype), axis % mask.ndim)
    return selected if base is None else base + selected
