"""RepBN: batch normalization plus a learnable scaled identity."""

from keras import initializers
from keras import ops

from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.normalization import statistics
from keras_batchopt.src.layers.normalization.base import ChannelNormalization


def batch_moments(rows, weights):
    """Per-channel mean and biased variance over the real tokens, and
    their count."""
    mean = statistics.masked_channel_mean(rows, weights)
    variance = statistics.masked_channel_mean(ops.square(rows - mean), weights)
    if weights is None:
        count = ops.cast(ops.shape(rows)[0], rows.dtype)
    else:
        count = ops.maximum(ops.sum(weights), 1.0)
    return mean, variance, count


class RepBatchNormalizationBase(ChannelNormalization):
    """The RepBN weights, training math and folding shared by
    `RepBatchNormalization` and `ProgressiveRepBN`."""

    def __init__(self, alpha_initializer="ones", **kwargs):
        super().__init__(**kwargs)
        self.alpha_initializer = initializers.get(alpha_initializer)
        self.supports_masking = True

    def build_rep_bn(self, channels):
        self.gamma, self.beta = self.build_affine(channels)
        self.build_moving_statistics(channels)
        self.alpha = self.add_weight(
            shape=(),
            name="alpha",
            initializer=self.alpha_initializer,
            autocast=False,
        )

    def rep_bn_training(self, rows, weights, update=True):
        """RepBN of `(rows, channels)` on batch statistics; the moving
        statistics take the PyTorch update (unbiased variance) where
        `update` holds."""
        mean, variance, count = statistics.synchronize(
            *batch_moments(rows, weights), self.synchronized
        )
        scale, offset = statistics.scale_and_offset(
            mean,
            variance,
            self.read(self.gamma, rows.dtype),
            self.read(self.beta, rows.dtype),
            self.epsilon,
        )
        alpha = ops.cast(self.alpha, rows.dtype)
        moving_mean = ops.cast(self.moving_mean, rows.dtype)
        moving_variance = ops.cast(self.moving_variance, rows.dtype)
        m = self.momentum
        new_mean = m * moving_mean + (1 - m) * ops.stop_gradient(mean)
        new_variance = m * moving_variance + (1 - m) * ops.stop_gradient(
            statistics.unbiased(variance, count)
        )
        if update is not True:
            new_mean = ops.where(update, new_mean, moving_mean)
            new_variance = ops.where(update, new_variance, moving_variance)
        self.moving_mean.assign(ops.cast(new_mean, "float32"))
        self.moving_variance.assign(ops.cast(new_variance, "float32"))
        return rows * (scale + alpha) + offset

    def rep_bn_inference(self, rows):
        scale, shift = self._affine(rows.dtype)
        return rows * scale + shift

    def _affine(self, dtype):
        scale, offset = statistics.scale_and_offset(
            ops.cast(self.moving_mean, dtype),
            ops.cast(self.moving_variance, dtype),
            self.read(self.gamma, dtype),
            self.read(self.beta, dtype),
            self.epsilon,
        )
        return scale + ops.cast(self.alpha, dtype), offset

    def inference_affine(self):
        """`(scale, shift)`, NumPy float32 arrays of shape `(channels,)`
        with inference output `x * scale + shift`:
        `scale = gamma / sqrt(moving_variance + eps) + alpha`."""
        scale, shift = self._affine("float32")
        return ops.convert_to_numpy(scale), ops.convert_to_numpy(shift)

    def get_config(self):
        config = super().get_config()
        config["alpha_initializer"] = initializers.serialize(
            self.alpha_initializer
        )
        return config


@keras_batchopt_export("keras_batchopt.layers.RepBatchNormalization")
class RepBatchNormalization(RepBatchNormalizationBase):
    """Re-parameterizable batch normalization, `BN(x) + alpha * x` (SLAB).

    Batch normalization over the channels of token sequences (every axis
    but the channel axis is reduced, as `BatchNorm1d` on the transposed
    `(batch, channels, tokens)` tensor), plus the input scaled by a
    learnable scalar `alpha` (initially 1; the paper's `eta`):

    ```
    training:   y = gamma (x - mean_B) / sqrt(var_B + eps) + beta + alpha x
    inference:  y = (gamma / sqrt(moving_variance + eps) + alpha) x
                    + beta - gamma moving_mean / sqrt(moving_variance + eps)
    ```

    Training vs inference: in training (`training=True` and the layer
    trainable) the batch statistics normalize and the moving statistics
    update as PyTorch's (`moving_variance` takes the unbiased batch
    variance); inference is the per-channel affine above
    (`inference_affine()`), which `keras_batchopt.layers.fold_normalization`
    merges into an adjacent `Dense`. Any inference batch size works.

    Args:
        axis: the channel axis (`-1` channels_last, `1` channels_first).
        momentum: Keras's convention, the weight of the old moving value:
            0.9 is PyTorch's (and SLAB's) `momentum=0.1`.
        epsilon: added to the variance; PyTorch's default 1e-5.
        alpha_initializer: initializer of `alpha` (`"ones"`).
        center, scale, beta_initializer, gamma_initializer,
        moving_mean_initializer, moving_variance_initializer,
        beta_regularizer, gamma_regularizer, beta_constraint,
        gamma_constraint: as in `keras.layers.BatchNormalization`.
        synchronized: whether, in training, the batch statistics are
            those of every replica's batch: under a `tf.distribute`
            strategy the moments are all-reduced across the replicas (as
            `keras.layers.BatchNormalization(synchronized=True)` does);
            under `keras.distribution` on JAX a jitted step already
            reduces over the global batch, synchronized or not. Defaults
            to `False`. `True` raises a ValueError on torch (Keras has no
            torch distribution).
        **kwargs: base `Layer` arguments.

    Masking: with a Keras mask (True for real tokens), the batch
    statistics are taken over the real tokens only (an extension: the
    official module has no mask).

    Example:

    >>> import numpy as np
    >>> import keras_batchopt
    >>> layer = keras_batchopt.layers.RepBatchNormalization()
    >>> x = np.random.default_rng(0).normal(size=(4, 7, 8)).astype("float32")
    >>> tuple(layer(x, training=True).shape)
    (4, 7, 8)

    References:
        - Guo, Chen, Tang, Wang. "SLAB: Efficient Transformers with
          Simplified Linear Attention and Progressive Re-parameterized
          Batch Normalization." ICML 2024. arXiv:2405.11582.
        - Official code: github.com/xinghaochen/SLAB
          (`classification/models/prepbn.py`, `RepBN`).

    Note:
        Keras's `BatchNormalization` updates `moving_variance` with the
        biased batch variance and defaults to `momentum=0.99,
        epsilon=1e-3`; this layer follows PyTorch, as the official code.
    """

    def __init__(self, axis=-1, momentum=0.9, epsilon=1e-5, **kwargs):
        super().__init__(
            axis=axis, momentum=momentum, epsilon=epsilon, **kwargs
        )

    def build(self, input_shape):
        self.build_rep_bn(self.channels(input_shape))

    def call(self, inputs, training=None, mask=None):
        x = statistics.upcast(inputs)
        rows, back = statistics.to_rows(x, self.channel_axis(len(x.shape)))
        if self.is_training(training):
            weights = statistics.row_weights(mask, rows)
            y = self.rep_bn_training(rows, weights)
        else:
            y = self.rep_bn_inference(rows)
        return ops.cast(back(y), inputs.dtype)
