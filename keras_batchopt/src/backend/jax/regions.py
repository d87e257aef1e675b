"""RegionNormalization's normalization on JAX, with its own derivative.

Both regions' per-channel sums are one product with the one-hot region
weights `w` (`(positions, 2)`), in full float32 precision
(`Precision.HIGHEST`: no TF32 or bfloat16 passes on GPU and TPU). A
region selection is a `where`, which XLA fuses into its consumer.

`region_normalize` is the whole normalization (the corrected two-pass
moments, then the per-region affine) with one custom JVP whose transpose
is the cheap form of each piece: the tangent's region sums are two masked
sums, which reverse mode turns into a `where` fused into the input's
gradient, and its per-region terms are spread by the product `w @ table`,
which reverse mode turns into the product `w.T @ cotangent`. So the
gradient is one product for the per-region sums of the cotangent, one for
those of `cotangent * centered`, and one fused pass for the input's
gradient. A custom JVP (not VJP) keeps forward mode, and so
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


def _masked_sums(v, inside, axis):
    """Both regions' per-channel sums of `v` as two masked reductions: the
    form whose transpose (a select) fuses into its consumer."""
    axes = tuple(i for i in range(v.ndim) if i != axis)
    zero = jnp.zeros((), v.dtype)
    return jnp.stack(
        [
            jnp.sum(jnp.where(inside, v, zero), axes),
            jnp.sum(jnp.where(inside, zero, v), axes),
        ]
    )


def _moments(x, mask, axis, epsilon):
    """The region statistics of `x`: `centered` (`x` minus its region's
    first-pass mean), the `correction` of those means, the `scale`
    `sqrt(n_R / N) / sqrt(var_R + epsilon)` and `var_R + epsilon`, per
    region (`(2, C)` each, row 0 the region), and the region sizes.

    Corrected two-pass moments: the sums of `centered` correct the means
    and the squares, which keeps large-mean inputs exact in float32.
    """
    mask = jax.lax.stop_gradient(mask)
    total = mask.size
    inside = jnp.sum(mask)
    sizes = jnp.stack([inside, total - inside])[:, None]
    sizes = jnp.where(sizes == 0, jnp.ones_like(sizes), sizes)
    centered = x - _select(_sums(x, mask, axis) / sizes, mask, axis)
    residuals = _sums(centered, mask, axis)
    squares = _sums(jnp.square(centered), mask, axis)
    correction = residuals / sizes
    variance = (squares - residuals * correction) / total + epsilon
    scale = jax.lax.rsqrt(variance) * jnp.sqrt(sizes / total)
    return centered, correction, scale, variance, sizes


def _normalized(centered, correction, amplitude, offset, mask, axis):
    """`(centered - correction) * amplitude + offset` per region."""
    return centered * _select(amplitude, mask, axis) + _select(
        offset - correction * amplitude, mask, axis
    )


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 5))
def _region_normalize(x, mask, axis, gammas, offset, epsilon):
    """`statistics.region_normalize` (no synchronization: a jitted step
    under `keras.distribution` already reduces over the global batch)."""
    centered, correction, scale, _, _ = _moments(x, mask, axis, epsilon)
    amplitude = scale * (1.0 + gammas)
    return _normalized(centered, correction, amplitude, offset, mask, axis)


@_region_normalize.defjvp
def _region_normalize_jvp(axis, epsilon, primals, tangents):
    x, mask, gammas, offset = primals
    dx, _, d_gammas, d_offset = tangents
    mask = jax.lax.stop_gradient(mask)
    centered, correction, scale, variance, sizes = _moments(
        x, mask, axis, epsilon
    )
    amplitude = scale * (1.0 + gammas)
    y = _normalized(centered, correction, amplitude, offset, mask, axis)
    # With xh = x - mean_R, y = xh * a_R + offset and a_R = s_R (1 + g_R),
    # s_R = sqrt(n_R / N) / sqrt(S_R / N + eps), S_R = sum_R xh^2:
    # dy = (dx - d_mean_R) a_R + xh da_R + d_offset, d_mean_R =
    # sum_R dx / n_R, dS_R = 2 sum_R xh dx, ds_R = -s_R dS_R / (2 N v_R),
    # v_R = S_R / N + eps.
    # The sums of dx are masked sums, whose transposes are selects fused
    # into the input's gradient.
    inside = mask > 0.5
    d_sums = _masked_sums(dx, inside, axis)
    d_squares = _masked_sums(dx * centered, inside, axis) - correction * d_sums
    d_scale = -scale * d_squares / (mask.size * variance)
    d_amplitude = d_scale * (1.0 + gammas) + scale * d_gammas
    d_shift = d_offset - amplitude * d_sums / sizes - correction * d_amplitude
    # The per-region tangents spread by products with the one-hot weights,
    # whose transposes are products with the cotangent.
    dy = (
        dx * _select(amplitude, mask, axis)
        + centered * _select_by_product(d_amplitude, mask, axis)
        + _select_by_product(d_shift, mask, axis)
    )
    return y, dy


def region_normalize(x, mask, axis, gammas, offset, epsilon):
    """See `statistics.region_normalize`."""
    return _region_normalize(
        x, mask.astype(x.dtype), axis % x.ndim, gammas, offset, epsilon
    )
