from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.normalization import statistics
from keras_batchopt.src.layers.normalization.base import ChannelNormalization

BATCH_STATISTICS = ("estimated", "batch")


def group_moments(mean, variance, axis, groups):
    """Per-sample group moments from per-sample channel moments.

    `mean` and `variance` (biased) are per sample and channel, with the
    spatial axes kept as 1; a group's mean is the mean of its channels'
    means, and its variance the mean of `variance + (mean - group mean)^2`
    (the law of total variance, exact for equal counts). Returns them
    broadcast back to one value per channel.
    """
    shape = tuple(mean.shape)
    channels = shape[axis]
    split = shape[:axis] + (groups, channels // groups) + shape[axis + 1 :]
    mean = ops.reshape(mean, (-1,) + split[1:])
    variance = ops.reshape(variance, (-1,) + split[1:])
    group_mean = statistics.mean(mean, axis + 1, keepdims=True)
    group_variance = statistics.mean(
        variance + ops.square(mean - group_mean), axis + 1, keepdims=True
    )
    full = (ops.shape(mean)[0],) + split[1:]
    return tuple(
        ops.reshape(ops.broadcast_to(v, full), (-1,) + shape[1:])
        for v in (group_mean, group_variance)
    )


@keras_batchopt_export("keras_batchopt.layers.BatchChannelNormalization")
class BatchChannelNormalization(ChannelNormalization):
    """Batch-Channel Normalization (Qiao et al.), for micro-batch training.

    A batch normalization, then a group normalization whose affine is one
    scale and offset per group:

    ```
    y = BN(x) * gamma_c + beta_c                 (per channel c)
    z = GN(y) * group_gamma_g + group_beta_g     (per group g)
    ```

    The batch part follows `batch_statistics`:

    - `"estimated"` (default; the official `EstBN`, for micro-batches):
      in training, the moving statistics are first updated from the batch,
      `moving_mean <- m * moving_mean + (1 - m) * mean(x)` and
      `moving_variance <- m * moving_variance + (1 - m) *
      mean((x - old_moving_mean)^2)` (a variance around the *old* moving
      mean), and then the batch is normalized with the *updated* moving
      statistics. No gradient flows through the statistics. Inference
      uses the moving statistics too, so training and inference compute
      the same function of `x` but for the update.
    - `"batch"`: an ordinary batch normalization (PyTorch's
      `BatchNorm2d`, the official default): batch mean and biased variance
      in training, the moving variance updated with the unbiased one;
      moving statistics in inference.

    The channel part always uses the statistics of each sample (biased
    variance over a group's channels and the spatial axes), in training
    and inference alike.

    Args:
        groups: the number of groups, an int >= 1 that divides the
            channels. Defaults to `32`.
        axis: the channel axis, an int. `-1` (default) for channels_last,
            `1` for channels_first.
        batch_statistics: `"estimated"` or `"batch"`, see above.
        momentum: the weight of the old moving statistics, in [0, 1).
            Defaults to `0.99` (the official "moving speed" is
            `1 - momentum`).
        epsilon: a float > 0 added to both variances. Defaults to `1e-5`.
        center: whether to learn the per-channel and per-group offsets.
        scale: whether to learn the per-channel and per-group scales.
        beta_initializer, gamma_initializer, moving_mean_initializer,
        moving_variance_initializer, beta_regularizer, gamma_regularizer,
        beta_constraint, gamma_constraint: as in
            `keras.layers.BatchNormalization`, for the per-channel affine;
            the per-group affine starts at scale 1 and offset 0.
        synchronized: whether, in training, the batch statistics are
            those of every replica's batch: under a `tf.distribute`
            strategy the moments are all-reduced across the replicas (as
            `keras.layers.BatchNormalization(synchronized=True)` does);
            under `keras.distribution` on JAX a jitted step already
            reduces over the global batch, synchronized or not. Defaults
            to `False`. `True` raises a ValueError on torch (Keras has no
            torch distribution).
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        inputs: a tensor of rank >= 3 (batch, spatial axes, channels).
        training: whether to update the moving statistics (and, with
            `"batch"`, to normalize with the batch statistics).
        mask: an optional boolean mask of the input's shape without the
            channel axis (Keras's masking, True for a real position). The
            batch statistics are then over the real positions only, as
            in `keras.layers.BatchNormalization`, and so are each
            sample's group statistics; the mask is passed on.

    Returns:
        A tensor of the same shape, in the layer's compute dtype.

    Example:

    >>> import keras, keras_batchopt
    >>> import numpy as np
    >>> model = keras.Sequential([
    ...     keras.Input((16, 16, 3)),
    ...     keras_batchopt.layers.WSConv2D(32, 3, use_bias=False),
    ...     keras_batchopt.layers.BatchChannelNormalization(groups=8),
    ...     keras.layers.ReLU(),
    ... ])
    >>> x = np.random.default_rng(0).normal(size=(2, 16, 16, 3))
    >>> tuple(model(x, training=True).shape)
    (2, 14, 14, 32)

    Note:
        The official code sets its moving speed from the training loop and
        initializes it to 0 (statistics frozen); this layer takes a
        constant `momentum`. Its batch part's epsilon is fixed at 1e-5
        there; here one `epsilon` serves both parts. The official BN part
        is PyTorch's, so the moving variance of `"batch"` is unbiased.

        A masked position takes no part in any statistic: not in the batch
        part (as in Keras's BatchNormalization), and not in the group part
        either, in training and inference alike, so that the output at
        the real positions does not depend on the padding. Keras's
        GroupNormalization passes a mask on but counts the padding in its
        statistics; this layer does not. A sample without a real position
        is normalized with group mean 0 and variance 0 (no NaN) and takes
        no part in the batch statistics. Outputs at masked positions mean
        nothing.

    References:
        - Qiao, Wang, Liu, Shen and Yuille, 2019, [Micro-Batch Training
          with Batch-Channel Normalization and Weight Standardization](
          https://arxiv.org/abs/1903.10520)
    """

    min_rank = 3

    def __init__(
        self,
        groups=32,
        axis=-1,
        batch_statistics="estimated",
        momentum=0.99,
        epsilon=1e-5,
        **kwargs,
    ):
        super().__init__(
            axis=axis, momentum=momentum, epsilon=epsilon, **kwargs
        )
        self.groups = validation.check_positive_int("groups", groups)
        self.batch_statistics = validation.check_one_of(
            "batch_statistics", batch_statistics, BATCH_STATISTICS
        )
        self.supports_masking = True

    def build(self, input_shape):
        channels = self.channels(input_shape)
        if channels % self.groups:
            validation.fail(
                "groups",
                f"a divisor of the number of channels ({channels})",
                self.groups,
            )
        self.gamma, self.beta = self.build_affine(channels)
        self.group_gamma, self.group_beta = self.build_affine(
            self.groups, prefix="group_"
        )
        self.build_moving_statistics(channels)

    def call(self, inputs, training=None, mask=None):
        # Both parts need only each sample's per-channel moments (over its
        # real positions): the batch moments follow from them, and so do
        # the group moments of the batch part's output, an affine map of
        # the input per channel. The input is then read once more, for one
        # fused affine map.
        statistics.check_mask(mask, inputs)
        x = statistics.upcast(inputs)
        rank = len(x.shape)
        axis = self.channel_axis(rank)
        channels = x.shape[axis]
        shape = statistics.channel_shape(rank, axis, channels)
        spatial = statistics.reduction_axes(rank, axis)
        weights = statistics.mask_weights(mask, x, axis)
        sample_mean, sample_variance, count = statistics.weighted_moments(
            x, weights, spatial
        )
        mean = ops.reshape(ops.cast(self.moving_mean, x.dtype), shape)
        variance = ops.reshape(ops.cast(self.moving_variance, x.dtype), shape)
        if self.is_training(training):
            batch_mean, batch_variance = statistics.pooled_moments(
                sample_mean,
                sample_variance,
                None if weights is None else count,
                0,
            )
            total = statistics.batch_count(count, weights, x)
            batch_mean, batch_variance, total = statistics.synchronize(
                batch_mean, batch_variance, total, self.synchronized
            )
            if self.batch_statistics == "estimated":
                mean, variance = self._estimate(
                    batch_mean, batch_variance, mean, variance
                )
            else:
                mean, variance = batch_mean, batch_variance
                statistics.moving_average(
                    self.moving_mean, ops.reshape(mean, (-1,)), self.momentum
                )
                # PyTorch's unbiased update, over the real values.
                unbiased = statistics.unbiased(
                    ops.reshape(variance, (-1,)), ops.reshape(total, (-1,))
                )
                statistics.moving_average(
                    self.moving_variance, unbiased, self.momentum
                )
        gamma = self.read(self.gamma, x.dtype)
        beta = self.read(self.beta, x.dtype)
        scale, offset = statistics.scale_and_offset(
            mean,
            variance,
            None if gamma is None else ops.reshape(gamma, shape),
            None if beta is None else ops.reshape(beta, shape),
            self.epsilon,
        )
        # The batch part's output y = x * scale + offset, per sample and
        # channel: mean scale * m + offset, variance scale^2 * v.
        group_mean, group_variance = group_moments(
            sample_mean * scale + offset,
            sample_variance * ops.square(scale),
            axis,
            self.groups,
        )
        group_gamma = self.read(self.group_gamma, x.dtype)
        group_beta = self.read(self.group_beta, x.dtype)
        per_group = statistics.channel_shape(rank, axis, self.groups)
        per_channel = shape[:axis] + [self.groups, -1] + shape[axis + 1 :]
        per_channel[axis + 1] = channels // self.groups

        def to_channels(vector):
            vector = ops.reshape(
                vector, per_group[: axis + 1] + [1] + per_group[axis + 1 :]
            )
            vector = ops.broadcast_to(vector, per_channel)
            return ops.reshape(vector, shape)

        group_scale, group_offset = statistics.scale_and_offset(
            group_mean,
            group_variance,
            None if group_gamma is None else to_channels(group_gamma),
            None if group_beta is None else to_channels(group_beta),
            self.epsilon,
        )
        outputs = x * (scale * group_scale) + (
            offset * group_scale + group_offset
        )
        return ops.cast(outputs, self.compute_dtype)

    def _estimate(self, batch_mean, batch_variance, mean, variance):
        """EstBN: the moving statistics moved towards the batch ones, with
        the variance around the old moving mean, `mean((x - old)^2) = var
        + (mean - old)^2`; assigned and returned. No gradient flows
        through the batch statistics."""
        batch_mean = ops.stop_gradient(batch_mean)
        batch_variance = ops.stop_gradient(batch_variance)
        around_old = batch_variance + ops.square(batch_mean - mean)
        mean = mean * self.momentum + batch_mean * (1 - self.momentum)
        variance = variance * self.momentum + around_old * (1 - self.momentum)
        for variable, value in (
            (self.moving_mean, mean),
            (self.moving_variance, variance),
        ):
            variable.assign(ops.cast(ops.reshape(value, (-1,)), variable.dtype))
        return mean, variance

    def get_config(self):
        config = super().get_config()
        config.update(
            {"groups": self.groups, "batch_statistics": self.batch_statistics}
        )
        return config
