from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.normalization import statistics
from keras_batchopt.src.layers.normalization.base import ChannelNormalization

MOVING_STATISTICS = ("mean", "sequential")


def ghost_moments(x, virtual_batch_size, axis, mask=None):
    """Mean and biased variance of each ghost batch.

    The batch is cut into contiguous ghost batches of `virtual_batch_size`
    samples; the last one holds the remainder. With a Keras `mask`, only
    the real positions of each ghost batch count. Returns a dict with `x`
    reshaped to `(ghosts, virtual_batch_size, ...)` (zero-padded when the
    batch does not divide), the moments of shape `(ghosts, 1, ...)`, the
    number of real values per ghost batch and channel, of the same shape,
    the batch size and whether `x` was padded. A ghost batch without a
    real value has moments 0 and count 0.
    """
    rank = len(x.shape)
    # Static sizes where known; a sequence length may not be.
    rest = tuple(ops.shape(x)[1:])
    axes = [1] + [i + 1 for i in range(1, rank) if i != axis]
    weights = statistics.mask_weights(mask, x, axis)
    # The shape of the weights per sample: that of `x` but the channels.
    weight_shape = tuple(1 if i == axis - 1 else n for i, n in enumerate(rest))
    batch = x.shape[0]
    padded = not (isinstance(batch, int) and batch % virtual_batch_size == 0)
    if padded:
        # A partial last ghost batch: pad to whole ghosts, weight 0.
        batch = ops.shape(x)[0]
        padding = (-batch) % virtual_batch_size
        if weights is None:
            weights = ops.ones((batch,) + weight_shape, x.dtype)
        pad = [[0, padding]] + [[0, 0]] * (rank - 1)
        x = ops.pad(x, pad)
        weights = ops.pad(weights, pad)
    grouped = ops.reshape(x, (-1, virtual_batch_size) + rest)
    if weights is not None:
        weights = ops.reshape(weights, (-1, virtual_batch_size) + weight_shape)
    mean, variance, count = statistics.weighted_moments(grouped, weights, axes)
    return dict(
        grouped=grouped,
        mean=mean,
        variance=variance,
        count=count + ops.zeros_like(mean),
        batch=batch,
        padded=padded,
    )


@keras_batchopt_export("keras_batchopt.layers.GhostBatchNormalization")
class GhostBatchNormalization(ChannelNormalization):
    """Batch normalization over ghost batches (Hoffer et al.).

    Large batches generalize worse, partly because batch statistics over
    many samples carry less noise. Ghost batch normalization keeps the
    noise of a small batch inside a large one: in training, the batch is
    cut into contiguous "ghost" batches of `virtual_batch_size` samples,
    and each is normalized with its own statistics; `gamma` and `beta` are
    shared:

    ```
    x_g = (x_g - mean(x_g)) / sqrt(var(x_g) + epsilon) * gamma + beta
    ```

    with the biased variance over the samples of ghost batch `g` and every
    axis but the channel axis. When the batch size does not divide, the
    last ghost batch is smaller.

    In inference (`training=False`, or a frozen layer), the moving
    statistics are used, exactly as in `keras.layers.BatchNormalization`,
    and any batch size works: the ghost batches play no part.

    The moving statistics follow `moving_statistics`:

    - `"mean"` (default): one update per training step, with the mean of
      the ghost means and of the ghost (biased) variances, weighted by the
      ghost batches' sizes. This is tf-keras 2's `virtual_batch_size`;
      `momentum` means what it means in Keras's BatchNormalization.
    - `"sequential"`: one update per ghost batch, in order, with the ghost
      mean and the unbiased ghost variance, as the official code does (it
      runs a PyTorch BatchNorm once per ghost batch). The momentum then
      compounds once per ghost batch: `k` ghost batches move the moving
      statistics as far as `momentum**k` would in one update.

    Args:
        virtual_batch_size: the ghost batch size, an int >= 1.
        axis: the channel axis, an int. `-1` (default) for channels_last,
            `1` for channels_first.
        momentum: the weight of the old moving statistics, in [0, 1).
            Defaults to `0.99` (PyTorch's `momentum=0.1` is `0.9` here).
        epsilon: a float > 0 added to the variance. Defaults to `1e-3`, as
            in Keras (PyTorch and the official code use `1e-5`).
        moving_statistics: `"mean"` or `"sequential"`, see above.
        center: whether to add the learned offset `beta`.
        scale: whether to multiply by the learned scale `gamma`.
        beta_initializer, gamma_initializer, moving_mean_initializer,
        moving_variance_initializer, beta_regularizer, gamma_regularizer,
        beta_constraint, gamma_constraint: as in
            `keras.layers.BatchNormalization`.
        synchronized: whether, in training, the batch statistics are
            those of every replica's batch: under a `tf.distribute`
            strategy the moments are all-reduced across the replicas (as
            `keras.layers.BatchNormalization(synchronized=True)` does);
            under `keras.distribution` on JAX a jitted step already
            reduces over the global batch, synchronized or not. Defaults
            to `False`. `True` raises a ValueError on torch (Keras has no
            torch distribution).
            Each ghost batch is normalized by its own moments either way;
            synchronized, the moving statistics are updated from every
            replica's ghost batches, in replica order.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        inputs: a tensor of rank >= 2, batch first.
        training: whether to use ghost-batch statistics (and update the
            moving statistics) or the moving statistics.
        mask: an optional boolean mask of the input's shape without the
            channel axis (Keras's masking, True for a real position). In
            training, each ghost batch's statistics are then over its
            real positions only, as in `keras.layers.BatchNormalization`;
            the mask is passed on to the next layer.

    Returns:
        A tensor of the same shape, in the layer's compute dtype.

    Example:

    >>> import keras, keras_batchopt
    >>> import numpy as np
    >>> layer = keras_batchopt.layers.GhostBatchNormalization(
    ...     virtual_batch_size=4, center=False, scale=False)
    >>> x = np.arange(16, dtype="float32").reshape(8, 2)
    >>> y = keras.ops.convert_to_numpy(layer(x, training=True))
    >>> [round(float(v), 3) for v in y[:4, 0]]  # ghost batch 1
    [-1.342, -0.447, 0.447, 1.342]
    >>> [round(float(v), 3) for v in y[4:, 0]]  # ghost batch 2
    [-1.342, -0.447, 0.447, 1.342]
    >>> tuple(layer(x[:3]).shape)  # inference: any batch size
    (3, 2)

    Note:
        Ghost batches are contiguous runs of samples, as in the official
        code and in TabNet. tf-keras 2 interleaved them (sample `i` in
        ghost `i mod k`); with shuffled data the two are the same
        distribution, and on a batch they are equal up to a permutation
        (tested). Unlike tf-keras 2, the batch size need not divide by
        `virtual_batch_size`, inference ignores the ghost batches (keras
        #15790) and the layer saves and loads (keras #16713).

        With a mask, `"mean"` weighs each ghost batch by its number of
        real values, and `"sequential"` takes the unbiased variance with
        that number. A ghost batch without a real position is normalized
        with mean 0 and variance 0 (no NaN) and takes no part in the
        moving statistics: `"mean"` gives it weight 0, `"sequential"`
        skips its update. A batch without any real position moves the
        moving statistics towards 0, as Keras's BatchNormalization does.
        Outputs at masked positions are normalized with their ghost
        batch's statistics and mean nothing.

    References:
        - Hoffer, Hubara and Soudry, 2017, [Train longer, generalize
          better: closing the generalization gap in large batch training
          of neural networks](https://arxiv.org/abs/1705.08741)
    """

    batch_normalization_state = True

    def __init__(
        self,
        virtual_batch_size,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        moving_statistics="mean",
        **kwargs,
    ):
        super().__init__(
            axis=axis, momentum=momentum, epsilon=epsilon, **kwargs
        )
        self.virtual_batch_size = validation.check_positive_int(
            "virtual_batch_size", virtual_batch_size
        )
        self.moving_statistics = validation.check_one_of(
            "moving_statistics", moving_statistics, MOVING_STATISTICS
        )
        self.supports_masking = True

    def build(self, input_shape):
        channels = self.channels(input_shape)
        self.gamma, self.beta = self.build_affine(channels)
        self.build_moving_statistics(channels)

    def call(self, inputs, training=None, mask=None):
        statistics.check_mask(mask, inputs)
        x = statistics.upcast(inputs)
        rank = len(x.shape)
        axis = self.channel_axis(rank)
        if not self.is_training(training):
            return self.batch_normalize(
                x,
                ops.cast(self.moving_mean, x.dtype),
                ops.cast(self.moving_variance, x.dtype),
                axis,
            )
        gamma = self.read(self.gamma, x.dtype)
        beta = self.read(self.beta, x.dtype)
        ghosts = ghost_moments(x, self.virtual_batch_size, axis, mask)
        self._update_moving_statistics(ghosts)
        shape = statistics.channel_shape(rank + 1, axis + 1, -1)
        scale, offset = statistics.scale_and_offset(
            ghosts["mean"],
            ghosts["variance"],
            None if gamma is None else ops.reshape(gamma, shape),
            None if beta is None else ops.reshape(beta, shape),
            self.epsilon,
        )
        outputs = ghosts["grouped"] * scale + offset
        outputs = ops.reshape(outputs, (-1,) + tuple(ops.shape(x)[1:]))
        if ghosts["padded"]:
            outputs = outputs[: ghosts["batch"]]
        return ops.cast(outputs, self.compute_dtype)

    def _update_moving_statistics(self, ghosts):
        channels = self.moving_mean.shape[0]
        mean = ops.reshape(ghosts["mean"], (-1, channels))
        variance = ops.reshape(ghosts["variance"], (-1, channels))
        counts = ops.reshape(ghosts["count"], (-1, channels))
        # Synchronized: the moving statistics of every replica's ghost
        # batches, in replica order (those of one device with the whole
        # batch); each ghost batch is normalized by its own moments.
        mean, variance, counts = statistics.gather(
            [mean, variance, counts], self.synchronized
        )
        if self.moving_statistics == "mean":
            # Each ghost batch weighs its number of real values.
            weights = counts / ops.maximum(ops.sum(counts, 0), 1.0)
            statistics.moving_average(
                self.moving_mean, ops.sum(mean * weights, 0), self.momentum
            )
            statistics.moving_average(
                self.moving_variance,
                ops.sum(variance * weights, 0),
                self.momentum,
            )
            return
        # k sequential updates in closed form: ghost batch g of k weighs
        # (1 - m) m^(k - 1 - g), and the old value m^k. A ghost batch
        # without a real value makes no update: k counts the others, and
        # k - 1 - g the others after g.
        variance = statistics.unbiased(variance, counts)
        present = ops.cast(counts > 0, mean.dtype)
        after = ops.sum(present, 0) - ops.cumsum(present, 0)
        momentum = ops.cast(self.momentum, mean.dtype)
        weights = present * (1 - momentum) * momentum**after
        keep = momentum ** ops.sum(present, 0)
        for variable, value in (
            (self.moving_mean, mean),
            (self.moving_variance, variance),
        ):
            new = ops.cast(variable, mean.dtype) * keep
            new = new + ops.sum(value * weights, 0)
            variable.assign(ops.cast(new, variable.dtype))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "virtual_batch_size": self.virtual_batch_size,
                "moving_statistics": self.moving_statistics,
            }
        )
        return config
