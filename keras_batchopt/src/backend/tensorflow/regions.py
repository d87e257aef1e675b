"""Region sums and selections on TensorFlow, for RegionNormalization.

Both regions' per-channel sums are one batched matrix product with the
one-hot region weights `w` (`(batch, positions, 2)`), summed over the
batch, and a selection is the product `w @ table` (exact: each row of `w`
is one-hot) added to `base`; the gradients of both are products too, where
masked selects would each write, and then reduce, a tensor of the input's
size. The products need float32 matrix multiplication at full precision:
where TensorFlow may use TF32 (a GPU with TF32 execution enabled), the
masked sums and selects are used instead.

Layouts: the channels are last (`x` is viewed as `(batch, positions, C)`)
or on axis 1 (`x` as `(batch, C, positions)`).
"""

import tensorflow as tf


def _exact_products(dtype):
    """Whether a float matrix product is computed in `dtype`'s precision."""
    if dtype == tf.float64:
        return True
    if not tf.config.experimental.tensor_float_32_execution_enabled():
        return True
    return not tf.config.list_logical_devices("GPU")


def _weights(mask, batch):
    """One-hot `(batch, positions, 2)` weights, without gradient."""
    column = tf.reshape(tf.stop_gradient(mask), (batch, -1, 1))
    return tf.concat([column, 1.0 - column], axis=-1)


def region_sums(x, mask, axis):
    """See `statistics.region_sums`."""
    rank = x.shape.rank
    axis = axis % rank
    mask = tf.cast(mask, x.dtype)
    if not _exact_products(x.dtype):
        axes = [i for i in range(rank) if i != axis]
        return tf.stack(
            [
                tf.reduce_sum(x * mask, axes),
                tf.reduce_sum(x * (1.0 - mask), axes),
            ]
        )
    batch = tf.shape(x)[0]
    w = _weights(mask, batch)
    if axis == rank - 1:
        rows = tf.reshape(x, (batch, -1, tf.shape(x)[-1]))
        # Per sample, then summed over the batch: fewer values accumulated
        # one after the other, as for large-mean inputs.
        return tf.reduce_sum(tf.matmul(w, rows, transpose_a=True), 0)
    rows = tf.reshape(x, (batch, tf.shape(x)[1], -1))
    return tf.transpose(tf.reduce_sum(tf.matmul(rows, w), 0))


def region_select(table, mask, axis, base=None):
    """See `statistics.region_select`."""
    rank = mask.shape.rank
    axis = axis % rank
    mask = tf.cast(mask, table.dtype)
    if not _exact_products(table.dtype):
        shape = [1] * rank
        shape[axis] = -1
        selected = tf.where(
            mask > 0.5, tf.reshape(table[0], shape), tf.reshape(table[1], shape)
        )
        return selected if base is None else base + selected
    batch = tf.shape(mask)[0]
    w = _weights(mask, batch)
    channels = tf.shape(table)[1]
    if axis == rank - 1:
        selected = tf.matmul(w, table)  # (batch, positions, C)
    else:
        selected = tf.matmul(table, w, transpose_a=True, transpose_b=True)
    out_shape = tf.concat(
        [tf.shape(mask)[:axis], [channels], tf.shape(mask)[axis + 1 :]], 0
    )
    selected = tf.reshape(selected, out_shape)
    return selected if base is None else base + selected
