from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.normalization import statistics
from keras_batchopt.src.layers.normalization.base import ChannelNormalization


@keras_batchopt_export("keras_batchopt.layers.InstanceBatchNormalization")
class InstanceBatchNormalization(ChannelNormalization):
    """Instance-batch normalization, IBN-Net's IBN-a block (Pan et al.).

    Instance normalization removes the style of each image (contrast,
    colour, texture statistics), which batch normalization keeps. IBN-a
    sends the first `int(channels * ratio)` channels through instance
    normalization with a per-channel affine, and the others through batch
    normalization:

    ```
    y[:, c] = (x[:, c] - mean_n,c) / sqrt(var_n,c + eps) * gamma_c + beta_c
    ```

    with per-sample statistics over the spatial axes for the instance
    channels, and batch statistics (or, in inference, the moving ones)
    for the batch channels.

    In training, the batch channels use the batch mean and biased variance
    and update the moving statistics (with the unbiased variance, as
    PyTorch's `BatchNorm2d` in the official code). In inference they use
    the moving statistics. The instance channels use each sample's own
    statistics in training and inference alike (PyTorch's
    `InstanceNorm2d` keeps no running statistics).

    Place it, as IBN-a does, after the first convolution of the residual
    blocks of the early stages; the last stage keeps batch normalization.

    Args:
        ratio: the fraction of channels sent through instance
            normalization, in (0, 1). Defaults to `0.5`.
        axis: the channel axis, an int. `-1` (default) for channels_last,
            `1` for channels_first.
        momentum: the weight of the old moving statistics, in [0, 1).
            Defaults to `0.9`, PyTorch's `momentum=0.1` as in the official
            code.
        epsilon: a float > 0. Defaults to `1e-5`, as in the official code.
        center: whether to learn the offsets `beta`.
        scale: whether to learn the scales `gamma`.
        beta_initializer, gamma_initializer, moving_mean_initializer,
        moving_variance_initializer, beta_regularizer, gamma_regularizer,
        beta_constraint, gamma_constraint: as in
            `keras.layers.BatchNormalization`; `gamma` and `beta` cover
            all channels, the moving statistics the batch channels.
        synchronized: whether, in training, the batch statistics are
            those of every replica's batch: under a `tf.distribute`
            strategy the moments are all-reduced across the replicas (as
            `keras.layers.BatchNormalization(synchronized=True)` does);
            under `keras.distribution` on JAX a jitted step already
            reduces over the global batch, synchronized or not. Defaults
            to `False`. `True` raises a ValueError on torch (Keras has no
            torch distribution).
            Only the batch channels' statistics are synchronized; the
            instance channels use each sample's own.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        inputs: a tensor of rank >= 3 (batch, spatial axes, channels).
        training: whether the batch channels use batch statistics.
        mask: an optional boolean mask of the input's shape without the
            channel axis (Keras's masking, True for a real position). The
            batch statistics are then over the real positions only, as
            in `keras.layers.BatchNormalization`, and so are the instance
            statistics; the mask is passed on.

    Returns:
        A tensor of the same shape, in the layer's compute dtype.

    Example:

    >>> import keras, keras_batchopt
    >>> import numpy as np
    >>> layer = keras_batchopt.layers.InstanceBatchNormalization(ratio=0.5)
    >>> x = np.random.default_rng(0).normal(3.0, 2.0, size=(4, 8, 8, 6))
    >>> y = keras.ops.convert_to_numpy(layer(x, training=True))
    >>> bool(np.allclose(y[..., :3].mean(axis=(1, 2)), 0, atol=1e-5))
    True
    >>> bool(np.allclose(y[..., 3:].mean(axis=(0, 1, 2)), 0, atol=1e-5))
    True

    Note:
        The official module splits the channels with `torch.split(x,
        half)`, which for `ratio < 0.5` makes more than two pieces and
        drops the channels after the second; this layer keeps all of
        them, the first `int(channels * ratio)` through instance
        normalization and the rest through batch normalization.

        A masked position takes no part in any statistic: not in the batch
        channels' (as in Keras's BatchNormalization), and not in the
        instance channels' either, in training and inference alike, so
        that the output at the real positions does not depend on the
        padding. Keras's GroupNormalization (`groups=-1` is instance
        normalization) passes a mask on but counts the padding in its
        statistics; this layer does not. A sample without a real position
        gets instance mean 0 and variance 0 (no NaN) and takes no part in
        the batch statistics. Outputs at masked positions mean nothing.

    References:
        - Pan, Luo, Shi and Tang, 2018, [Two at Once: Enhancing Learning
          and Generalization Capacities via IBN-Net](
          https://arxiv.org/abs/1807.09441)
    """

    min_rank = 3

    def __init__(self, ratio=0.5, axis=-1, momentum=0.9, epsilon=1e-5, **kw):
        super().__init__(axis=axis, momentum=momentum, epsilon=epsilon, **kw)
        self.ratio = validation.check_in_interval(
            "ratio", ratio, 0.0, 1.0, False, False
        )
        self.supports_masking = True

    def build(self, input_shape):
        channels = self.channels(input_shape)
        self.instance_channels = int(channels * self.ratio)
        if not 0 < self.instance_channels < channels:
            validation.fail(
                "ratio",
                f"such that int({channels} * ratio) is in [1, {channels - 1}]"
                f" for an input of {channels} channels",
                self.ratio,
            )
        self.gamma, self.beta = self.build_affine(channels)
        self.build_moving_statistics(channels - self.instance_channels)

    def call(self, inputs, training=None, mask=None):
        statistics.check_mask(mask, inputs)
        x = statistics.upcast(inputs)
        rank = len(x.shape)
        axis = self.channel_axis(rank)
        channels = x.shape[axis]
        split = self.instance_channels
        shape = statistics.channel_shape(rank, axis, channels)
        spatial = statistics.reduction_axes(rank, axis)
        # Per-sample statistics over the real spatial positions, for every
        # channel.
        weights = statistics.mask_weights(mask, x, axis)
        mean, variance, count = statistics.weighted_moments(x, weights, spatial)
        if self.is_training(training):
            # Batch statistics from the per-sample ones (total variance).
            batch_mean, batch_variance = statistics.pooled_moments(
                mean, variance, None if weights is None else count, 0
            )
            total = statistics.batch_count(count, weights, x)
            batch_mean, batch_variance, total = statistics.synchronize(
                batch_mean, batch_variance, total, self.synchronized
            )
            statistics.moving_average(
                self.moving_mean,
                ops.reshape(batch_mean, (-1,))[split:],
                self.momentum,
            )
            statistics.moving_average(
                self.moving_variance,
                statistics.unbiased(
                    ops.reshape(batch_variance, (-1,))[split:],
                    ops.reshape(total, (-1,))[split:],
                ),
                self.momentum,
            )
        else:
            padding = ops.zeros((split,), x.dtype)
            batch_mean = ops.reshape(
                ops.concatenate([padding, ops.cast(self.moving_mean, x.dtype)]),
                shape,
            )
            batch_variance = ops.reshape(
                ops.concatenate(
                    [padding, ops.cast(self.moving_variance, x.dtype)]
                ),
                shape,
            )
        instance = ops.reshape(ops.arange(channels) < split, shape)
        mean = ops.where(instance, mean, batch_mean)
        variance = ops.where(instance, variance, batch_variance)
        gamma = self.read(self.gamma, x.dtype)
        beta = self.read(self.beta, x.dtype)
        scale, offset = statistics.scale_and_offset(
            mean,
            variance,
            None if gamma is None else ops.reshape(gamma, shape),
            None if beta is None else ops.reshape(beta, shape),
            self.epsilon,
        )
        return ops.cast(x * scale + offset, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config["ratio"] = self.ratio
        return config
