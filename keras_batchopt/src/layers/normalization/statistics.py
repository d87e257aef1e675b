"""Shared math of the normalization layers, in float32.

Statistics of float16 and bfloat16 inputs are taken in float32: a float16
sum of squares overflows above 256 and bfloat16 keeps 8 bits of mantissa.
Each layer upcasts once, computes, and casts its output back.
"""

from keras import backend
from keras import ops

from keras_batchopt.src import config
from keras_batchopt.src import validation
from keras_batchopt.src.backend import dispatch


def upcast(x):
    """``x`` in float32 if it is float16 or bfloat16, else unchanged
    (float64 stays float64)."""
    x = ops.convert_to_tensor(x)
    if backend.standardize_dtype(x.dtype) in ("float16", "bfloat16"):
        return ops.cast(x, "float32")
    return x


def fast_module(name):
    """The current backend's module `name` of fast steps (such as
    `"test_time_normalization"`), or None where it has none or
    `keras_batchopt.config.fast_paths_enabled()` is False: the layer then
    runs its generic `keras.ops` code."""
    if not config.fast_paths_enabled():
        return None
    return dispatch.backend_module(name, required=False)


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


def synchronized_channel_mean(rows, weights, synchronized=True):
    """`masked_channel_mean` over the rows of every replica (the real ones
    where `weights` is not None), through `synchronize_mean`; this
    replica's where there is nothing to synchronize."""
    if weights is None:
        count = ops.shape(rows)[0]
    else:
        count = ops.sum(weights)
    mean = masked_channel_mean(rows, weights)
    return synchronize_mean(mean, count, synchronized)[0]


def check_mask(mask, inputs):
    """Keras's check of a mask: one dimension less than the inputs."""
    if mask is not None and len(mask.shape) != len(inputs.shape) - 1:
        raise ValueError(
            "The mask provided should be one dimension less than the "
            f"inputs. Received: mask.shape={mask.shape}, "
            f"inputs.shape={inputs.shape}"
        )


def mask_weights(mask, x, axis):
    """A Keras mask (True for a real position; the shape of `x` without
    the channel axis) as 0/1 weights of `x`'s dtype, broadcast on the
    channel axis `axis` (size 1 there), or None without a mask. As in
    Keras 3.15's BatchNormalization, any nonzero mask value is real."""
    if mask is None:
        return None
    mask = ops.cast(ops.convert_to_tensor(mask), "bool")
    return ops.expand_dims(ops.cast(mask, x.dtype), axis)


def weighted_moments(x, weights, axes):
    """Mean and biased variance of `x` over `axes` (kept as size 1) over
    the positions of weight 1, and their number.

    `weights` is None (every position counts) or 0/1 weights of the shape
    of `x` but 1 on the channel axis (see `mask_weights`); the count then
    has that shape, reduced on `axes`. Positions of weight 0 take no
    part, not even a non-finite value. Where no position is real, the
    count is 0 and the mean and variance are 0, not NaN (Keras's
    BatchNormalization divides by `count + 1e-7`; here by `max(count,
    1)`: the same moments up to float rounding).
    """
    if weights is None:
        mean, variance = ops.moments(x, axes, keepdims=True)
        count = 1
        for i in axes:
            count = count * ops.shape(x)[i]
        return mean, variance, ops.cast(count, x.dtype)
    real = weights > 0
    count = ops.sum(weights, axes, keepdims=True)
    divisor = ops.maximum(count, 1.0)
    mean = ops.sum(ops.where(real, x, 0.0), axes, keepdims=True) / divisor
    centered = ops.where(real, x - mean, 0.0)
    variance = ops.sum(ops.square(centered), axes, keepdims=True) / divisor
    return mean, variance, count


def pooled_moments(means, variances, count, axis):
    """The mean and biased variance of the union of groups, from each
    group's mean, biased variance and number of values `count`, the
    groups along `axis` (kept as size 1): the law of total variance,
    `var = mean_n(variance + (mean - pooled mean)^2)` weighted by
    `count`. A `count` of None weighs the groups equally. Groups with a
    count of 0 take no part; with no value at all, both are 0."""
    if count is None:
        pooled = mean(means, axis, keepdims=True)
        spread = variances + ops.square(means - pooled)
        return pooled, mean(spread, axis, keepdims=True)
    count = ops.broadcast_to(count, ops.shape(means))
    total = ops.maximum(ops.sum(count, axis, keepdims=True), 1.0)
    pooled = ops.sum(means * count, axis, keepdims=True) / total
    spread = variances + ops.square(means - pooled)
    return pooled, ops.sum(spread * count, axis, keepdims=True) / total


def batch_count(count, weights, x):
    """The number of real values per channel in the batch `x`, from the
    per-sample `count` of `weighted_moments` over the spatial axes."""
    if weights is None:
        return count * ops.cast(ops.shape(x)[0], count.dtype)
    return ops.sum(count)


def sample_weighted_moments(means, variances, weights):
    """``sum_i w_i m_i`` and ``sum_i w_i (v_i + (m_i - mean)^2)``: the
    moments over the batch (axis 0, kept as size 1) of samples with
    means `m_i` and biased variances `v_i` (over their own positions),
    each sample weighted by `weights`, a vector of the batch size.

    The second is ``sum_i w_i mean((x_i - mean)^2)`` (the law of total
    variance). The weights are not normalized: with weights summing to 1
    these are the moments of the weighted mixture; with a smaller sum,
    both shrink with it.
    """
    shape = [-1] + [1] * (len(means.shape) - 1)
    weights = ops.reshape(ops.cast(weights, means.dtype), shape)
    pooled = ops.sum(means * weights, 0, keepdims=True)
    spread = variances + ops.square(means - pooled)
    return pooled, ops.sum(spread * weights, 0, keepdims=True)


def check_synchronized(layer, value):
    """`synchronized` of a batch-statistics layer: a bool, and False on
    torch, where Keras has no distribution (nothing to synchronize)."""
    validation.check_bool("synchronized", value)
    if value and backend.backend() == "torch":
        raise ValueError(
            f"{layer}: argument `synchronized=True` is supported on the "
            "TensorFlow backend (tf.distribute) and the JAX backend "
            "(keras.distribution); Keras has no distribution on torch. "
            f"Received: synchronized={value} with the torch backend"
        )
    return value


def _distribute(synchronized):
    """The backend's `distribute` module where `synchronized` and more
    than one replica are in sync (a `tf.distribute` strategy); None
    elsewhere: on JAX a jitted step under `keras.distribution` already
    reduces over the global batch."""
    module = dispatch.backend_module("distribute", required=False)
    if not synchronized or module is None or module.replicas() == 1:
        return None
    return module


def synchronize_mean(mean, count, synchronized=True):
    """The mean of every replica's values, from this replica's `mean` and
    its number of values `count` (a tensor that broadcasts to `mean`), in
    one all-reduce of the counts and weighted sums; returns it and the
    total count (of `mean`'s shape). Unchanged, `count` broadcast, where
    there is nothing to synchronize (see `synchronize`); 0 where no
    replica has a value."""
    count = ops.broadcast_to(ops.cast(count, mean.dtype), ops.shape(mean))
    module = _distribute(synchronized)
    if module is None:
        return mean, count
    total, weighted = module.all_reduce_sum([count, count * mean])
    return weighted / ops.maximum(total, 1.0), total


def synchronize(mean, variance, count, synchronized=True):
    """The batch moments of every replica's samples, from this replica's.

    `mean` and biased `variance` are this replica's batch moments and
    `count` its number of values per channel (a tensor that broadcasts to
    `mean`). Under a `tf.distribute` strategy with more than one replica
    they are pooled with the law of total variance, in two all-reduces
    (counts and weighted sums, `synchronize_mean`; then the spread around
    the pooled mean, exact where `E[x^2] - E[x]^2` cancels); returns the
    pooled mean, variance and the total count (of `mean`'s shape).
    Elsewhere (`synchronized` False, one replica, JAX, where a jitted step
    under `keras.distribution` already reduces over the global batch) they
    come back unchanged, `count` broadcast.
    """
    pooled, total = synchronize_mean(mean, count, synchronized)
    module = _distribute(synchronized)
    if module is None:
        return mean, variance, total
    count = ops.broadcast_to(ops.cast(count, mean.dtype), ops.shape(mean))
    spread = count * (variance + ops.square(mean - pooled))
    (spread,) = module.all_reduce_sum([spread])
    return pooled, spread / ops.maximum(total, 1.0), total


def gather(values, synchronized=True):
    """Every replica's `values` (a list of tensors) concatenated on axis 0
    in replica order under a `tf.distribute` strategy with more than one
    replica and `synchronized`; `values` unchanged elsewhere (see
    `synchronize`)."""
    module = _distribute(synchronized)
    return values if module is None else module.all_gather(values)


def all_reduce_sum(values, synchronized=True):
    """The sum over the replicas of each tensor of the list `values` under
    a `tf.distribute` strategy with more than one replica and
    `synchronized`; `values` unchanged elsewhere (see `synchronize`): for
    statistics that are sums, such as counts and region sums."""
    module = _distribute(synchronized)
    return values if module is None else module.all_reduce_sum(values)


def region_sums(x, mask, axis):
    """The per-channel sums of `x` over the positions where the binary
    `mask` is 1 and over those where it is 0, as a `(2, channels)` tensor
    (row 0: inside, row 1: outside).

    `mask` has the shape of `x` but 1 on the channel axis `axis` and holds
    exactly 0.0 or 1.0. A backend may compute both rows in one pass (a
    product with the one-hot region weights, in full float32 precision);
    the generic code selects and sums.
    """
    sums = getattr(fast_module("regions"), "region_sums", None)
    if sums is not None:
        return sums(x, mask, axis)
    inside = mask > 0.5
    axes = [i for i in range(len(x.shape)) if i != axis % len(x.shape)]
    zero = ops.zeros((), x.dtype)
    return ops.stack(
        [
            ops.sum(ops.where(inside, x, zero), axes),
            ops.sum(ops.where(inside, zero, x), axes),
        ]
    )


def region_select(table, mask, axis, base=None):
    """`table[0]` where the binary `mask` is 1 and `table[1]` where it is
    0, per channel, broadcast to the shape of `mask` with the channels on
    `axis`; `base + ` that when `base` (a tensor of that shape) is given.

    `table` is `(2, channels)`, as `region_sums` gives. The selection is
    exact (no arithmetic on the selected values but the addition).
    """
    select = getattr(fast_module("regions"), "region_select", None)
    if select is not None:
        return select(table, mask, axis, base)
    rank = len(mask.shape)
    shape = channel_shape(rank, axis % rank, -1)
    selected = ops.where(
        mask > 0.5,
        ops.reshape(table[0], shape),
        ops.reshape(table[1], shape),
    )
    return selected if base is None else base + selected


def region_normalize(x, mask, axis, gammas, offset, epsilon, synchronized):
    """RegionNormalization's normalization of `x`: per channel and region
    (the binary `mask`, as for `region_sums`),
    `(x - mean_R) * scale_R * (1 + gamma_R) + offset`, with
    `scale_R = sqrt(n_R / N) / sqrt(var_R + epsilon)`,
    `var_R = sum over R of (x - mean_R)^2 / N`, `N` the number of
    positions and `n_R` that of region `R` (an empty region gives
    `offset`).

    `gammas` is a `(2, channels)` table (row 0: the region, row 1: the
    rest) and `offset` a vector of channels. The moments are the corrected
    two-pass ones (the sums of the centered values correct the means and
    the squares), so inputs with large means keep float32 accuracy; they
    are summed over every replica when `synchronized` (see
    `all_reduce_sum`). A backend may compute all of it as one function
    with its own derivative where there is nothing to synchronize.
    """
    module = fast_module("regions")
    normalize = getattr(module, "region_normalize", None)
    if normalize is not None and _distribute(synchronized) is None:
        return normalize(x, mask, axis, gammas, offset, epsilon)
    total, size_in, size_out, sums = all_reduce_sum(
        [
            ops.cast(ops.size(mask), x.dtype),
            ops.sum(mask),
            ops.sum(1.0 - mask),
            region_sums(x, mask, axis),
        ],
        synchronized,
    )
    sizes = ops.stack([size_in, size_out])
    sizes = ops.expand_dims(
        ops.where(sizes == 0, ops.ones_like(sizes), sizes), 1
    )
    centered = region_select(-sums / sizes, mask, axis, x)
    # The sums of `centered` (0 but for the rounding of the means) are 0
    # as functions of `x`: no gradient flows through them.
    squares, residuals = all_reduce_sum(
        [
            region_sums(ops.square(centered), mask, axis),
            ops.stop_gradient(region_sums(centered, mask, axis)),
        ],
        synchronized,
    )
    correction = residuals / sizes
    squares = squares - residuals * correction
    scales = ops.rsqrt(squares / total + epsilon) * ops.sqrt(sizes / total)
    amplitudes = scales * (1.0 + gammas)
    # (centered - correction) * amplitude + offset per region.
    return region_select(
        offset - correction * amplitudes,
        mask,
        axis,
        centered * region_select(amplitudes, mask, axis),
    )
