from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.normalization import statistics
from keras_batchopt.src.layers.normalization.base import ChannelNormalization

# The backend module of the test-time layers' fast steps (torch: plain
# torch operations in place of eager `keras.ops` calls).
FAST_MODULE = "test_time_normalization"


def batch_moments(x, axis, mask=None):
    """Per-channel mean and biased variance of `x` over every axis but
    `axis` (over the real positions only when `mask` is given), and the
    number of values each is taken over, a scalar."""
    axes = statistics.reduction_axes(len(x.shape), axis, keep=())
    weights = statistics.mask_weights(mask, x, axis)
    mean, variance, count = statistics.weighted_moments(x, weights, axes)
    return (
        ops.reshape(mean, (-1,)),
        ops.reshape(variance, (-1,)),
        ops.reshape(count, ()),
    )


def static_count(shape, axis):
    """The number of values per channel when `shape` is fully known, else
    None."""
    count = 1
    for i, size in enumerate(shape):
        if i == axis:
            continue
        if size is None:
            return None
        count *= size
    return count


@keras_batchopt_export("keras_batchopt.layers.AlphaBatchNormalization")
class AlphaBatchNormalization(ChannelNormalization):
    """alpha-BN: test-time batch normalization with statistics mixed from
    the source (moving) statistics and the current batch (You et al.).

    A model trained on one distribution and run on a shifted one (noise,
    blur, another scanner) normalizes with source statistics that no longer
    fit; normalizing with the test batch alone ("test-time BN") fits the
    shift but loses the source statistics and fails on small batches.
    alpha-BN mixes the two, in inference:

    ```
    mean = (1 - alpha) * moving_mean + alpha * mean(x)
    var = (1 - alpha) * moving_variance + alpha * var_unbiased(x)
    y = (x - mean) / sqrt(var + epsilon) * gamma + beta
    ```

    with the batch statistics over every axis but the channel axis (the
    batch and the spatial positions), and the unbiased batch variance
    `n / (n - 1)` as in the official code (a PyTorch `BatchNorm2d` with
    `momentum=1.0` stores it as its running variance). `alpha = 0` is the
    source model, exactly `keras.layers.BatchNormalization` in inference;
    `alpha = 1` is test-time BN (with the unbiased variance). The layer
    keeps no state from batch to batch: each output depends on its own
    batch and on the source statistics only.

    In training (`training=True` on a trainable layer), it is
    `keras.layers.BatchNormalization`: batch statistics, and the moving
    statistics updated with `momentum`. So a trained Keras model can be
    converted with `keras_batchopt.adaptation.convert_batch_normalization`
    and adapted in inference (`model.predict`, `model(x)`).

    Batch size: the batch statistics need two values per channel or more.
    A convolutional input (rank >= 3) has them at batch size 1 (the
    spatial positions). An input with one value per channel (a `Dense`
    output at batch size 1) raises a ValueError when `alpha > 0` and the
    shape is known when the layer is called; where it is only known when
    the model runs (TensorFlow's predict function, once it has retraced
    for a second batch size), and where a mask leaves
    fewer than two real tokens, that batch is normalized with the source
    statistics alone. A batch whose statistics are not finite (a NaN or
    Inf in it) is also normalized with the source statistics alone: its
    finite samples still get finite outputs, and nothing carries over to
    the next batch.

    Args:
        alpha: the weight of the test-batch statistics, in [0, 1].
            Defaults to `0.1`, the value of the official configuration.
        axis: the channel axis, an int. `-1` (default) for channels_last,
            `1` for channels_first.
        momentum: the weight of the old moving statistics in training, in
            [0, 1). Defaults to `0.99`, as in Keras.
        epsilon: a float > 0 added to the variance. Defaults to `1e-3`, as
            in Keras (PyTorch and the official code use `1e-5`).
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
            In inference with `alpha > 0`, the test batch's statistics are
            synchronized too.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        inputs: a tensor of rank >= 2, batch first.
        training: whether to train as Keras's BatchNormalization (batch
            statistics, moving statistics updated) or to run alpha-BN.
        mask: an optional boolean mask of the input's shape without the
            channel axis (Keras's masking); the batch statistics are then
            taken over the real tokens only.

    Returns:
        A tensor of the same shape, in the layer's compute dtype.

    Example:

    >>> import keras, keras_batchopt
    >>> import numpy as np
    >>> layer = keras_batchopt.layers.AlphaBatchNormalization(
    ...     alpha=0.5, epsilon=1e-5)
    >>> x = np.array([[1.0], [3.0]], "float32")  # mean 2, unbiased var 2
    >>> y = keras.ops.convert_to_numpy(layer(x))  # moving stats 0 and 1
    >>> [round(float(v), 4) for v in y[:, 0]]  # (x - 1) / sqrt(1.5)
    [0.0, 1.633]

    Note:
        The official module replaces PyTorch's `BatchNorm2d` layers only
        (convolutional inputs); this layer takes any rank, and batches
        with too few values per channel follow the rules above where
        PyTorch raises. The official module mixes in training mode too;
        here training is Keras's BatchNormalization, so that a model with
        this layer can also be trained or fine-tuned. On torch, an
        inference step without a mask runs as plain torch operations with
        the same arithmetic (eager `keras.ops` calls on small tensors cost more
        than their work); `keras_batchopt.config.fast_paths(False)` runs
        the generic code.

        You et al. also propose an adaptation loss, "Core" (pairwise
        class correlation of the predictions); it is not implemented here:
        neither its code nor a text that defines it could be found.

    References:
        - You, Li and Zhao, 2021, [Test-time Batch Statistics Calibration
          for Covariate Shift](https://arxiv.org/abs/2110.04065)
        - Schneider et al., 2020, [Improving robustness against common
          corruptions by covariate shift adaptation](
          https://arxiv.org/abs/2006.16971) (the source-prior form).
        - Reference module: `AlphaBatchNorm` in
          `tta_experiments/methods/bn.py` of
          https://github.com/devavratTomar/unmixtns at commit
          8e12b9f03f394290eb89df58e17d949f082d5152 (the baseline of
          UnMix-TNS, Tomar et al., ICLR 2024; no code of You et al. was
          found).
    """

    # The state of keras.layers.BatchNormalization, by weight name: the
    # model surgery of keras_batchopt.adaptation converts to and from it.
    batch_normalization_state = True

    def __init__(
        self, alpha=0.1, axis=-1, momentum=0.99, epsilon=1e-3, **kwargs
    ):
        super().__init__(
            axis=axis, momentum=momentum, epsilon=epsilon, **kwargs
        )
        self.alpha = validation.check_in_interval(
            "alpha", alpha, 0.0, 1.0, True, True
        )
        self.supports_masking = True

    def build(self, input_shape):
        channels = self.channels(input_shape)
        self.gamma, self.beta = self.build_affine(channels)
        self.build_moving_statistics(channels)

    def call(self, inputs, training=None, mask=None):
        x = statistics.upcast(inputs)
        axis = self.channel_axis(len(x.shape))
        statistics.check_mask(mask, x)
        moving_mean = ops.cast(self.moving_mean, x.dtype)
        moving_variance = ops.cast(self.moving_variance, x.dtype)
        if self.is_training(training):
            mean, variance, _ = statistics.synchronize(
                *batch_moments(x, axis, mask), self.synchronized
            )
            statistics.moving_average(self.moving_mean, mean, self.momentum)
            statistics.moving_average(
                self.moving_variance, variance, self.momentum
            )
        elif self.alpha == 0.0:
            mean, variance = moving_mean, moving_variance
        else:
            self._check_count(x, axis, mask)
            fast = statistics.fast_module(FAST_MODULE)
            if fast is not None and mask is None and not self.synchronized:
                outputs = fast.alpha_inference(self, x, axis)
                return ops.cast(outputs, self.compute_dtype)
            mean, variance = self._mixed_statistics(
                x, axis, mask, moving_mean, moving_variance
            )
        return self.batch_normalize(x, mean, variance, axis)

    def _check_count(self, x, axis, mask):
        if mask is None and static_count(x.shape, axis) == 1:
            raise ValueError(
                f"{type(self).__name__} with alpha={self.alpha} needs two "
                "values per channel or more for the unbiased variance of "
                "the test batch, as the official code. Received: inputs of "
                f"shape {tuple(x.shape)}, one value per channel. Use "
                "batches of two or more, or alpha=0 (the source statistics)."
            )

    def _mixed_statistics(self, x, axis, mask, moving_mean, moving_variance):
        # Synchronized: the test batch of every replica.
        mean, variance, count = statistics.synchronize(
            *batch_moments(x, axis, mask), self.synchronized
        )
        variance = statistics.unbiased(variance, count)
        usable = ops.logical_and(
            count >= 2,
            ops.logical_and(
                ops.all(ops.isfinite(mean)), ops.all(ops.isfinite(variance))
            ),
        )
        alpha = ops.where(usable, self.alpha, 0.0)
        alpha = ops.cast(alpha, x.dtype)
        # Non-finite statistics weigh 0, and 0 * inf would be NaN.
        mean = ops.where(usable, mean, 0.0)
        variance = ops.where(usable, variance, 0.0)
        return (
            (1 - alpha) * moving_mean + alpha * mean,
            (1 - alpha) * moving_variance + alpha * variance,
        )

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        config = super().get_config()
        config["alpha"] = self.alpha
        return config
