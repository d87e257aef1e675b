from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.normalization import statistics
from keras_batchopt.src.layers.normalization.base import ChannelNormalization

BATCH_STATISTICS = ("estimated", "batch")


def group_normalize(x, axis, groups, gamma, beta, epsilon):
    """Group normalization without a per-channel affine, then an affine per
    group (`gamma`, `beta` of shape `(groups,)`), as BCN's channel part.

    Statistics per sample and group over the group's channels and every
    other non-batch axis; biased variance.
    """
    shape = tuple(x.shape)
    rank = len(shape)
    channels = shape[axis]
    split = (
        tuple(ops.shape(x)[:axis])
        + (groups, channels // groups)
        + tuple(ops.shape(x)[axis + 1 :])
    )
    grouped = ops.reshape(x, (-1,) + split[1:])
    axes = [i for i in range(1, rank + 1) if i != axis]
    mean, variance = ops.moments(grouped, axes, keepdims=True)
    affine_shape = statistics.channel_shape(rank + 1, axis, groups)
    scale, offset = statistics.scale_and_offset(
        mean,
        variance,
        None if gamma is None else ops.reshape(gamma, affine_shape),
        None if beta is None else ops.reshape(beta, affine_shape),
        epsilon,
    )
    return ops.reshape(grouped * scale + offset, (-1,) + shape[1:])


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
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        inputs: a tensor of rank >= 3 (batch, spatial axes, channels).
        training: whether to update the moving statistics (and, with
            `"batch"`, to normalize with the batch statistics).

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

    def call(self, inputs, training=None):
        x = statistics.upcast(inputs)
        rank = len(x.shape)
        axis = self.channel_axis(rank)
        mean = ops.cast(self.moving_mean, x.dtype)
        variance = ops.cast(self.moving_variance, x.dtype)
        if self.is_training(training):
            axes = statistics.reduction_axes(rank, axis, keep=())
            batch_mean, batch_variance = ops.moments(x, axes)
            if self.batch_statistics == "estimated":
                # No gradient through the estimated statistics.
                batch_mean = ops.stop_gradient(batch_mean)
                batch_variance = ops.stop_gradient(batch_variance)
                # mean((x - old)^2) = var + (mean - old)^2, in one pass.
                around_old = batch_variance + ops.square(batch_mean - mean)
                mean = mean * self.momentum + batch_mean * (1 - self.momentum)
                variance = variance * self.momentum + around_old * (
                    1 - self.momentum
                )
                self.moving_mean.assign(ops.cast(mean, self.moving_mean.dtype))
                self.moving_variance.assign(
                    ops.cast(variance, self.moving_variance.dtype)
                )
            else:
                count = 1
                for i in axes:
                    count = count * ops.shape(x)[i]
                statistics.moving_average(
                    self.moving_mean, batch_mean, self.momentum
                )
                statistics.moving_average(
                    self.moving_variance,
                    statistics.unbiased(batch_variance, count),
                    self.momentum,
                )
                mean, variance = batch_mean, batch_variance
        y = ops.batch_normalization(
            x,
            mean,
            variance,
            axis=axis,
            offset=self.read(self.beta, x.dtype),
            scale=self.read(self.gamma, x.dtype),
            epsilon=self.epsilon,
        )
        outputs = group_normalize(
            y,
            axis,
            self.groups,
            self.read(self.group_gamma, x.dtype),
            self.read(self.group_beta, x.dtype),
            self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"groups": self.groups, "batch_statistics": self.batch_statistics}
        )
        return config
