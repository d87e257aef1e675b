from keras import initializers
from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.normalization import statistics
from keras_batchopt.src.layers.normalization.alpha_batch_normalization import (
    FAST_MODULE,
)
from keras_batchopt.src.layers.normalization.alpha_batch_normalization import (
    batch_moments,
)
from keras_batchopt.src.layers.normalization.base import ChannelNormalization

NORMALIZE_WITH = ("batch", "moving")
# The weights that hold the adaptation state; a Keras BatchNormalization
# has none of them (model surgery leaves them at their initial values).
ADAPTATION_STATE = (
    "source_gamma",
    "source_beta",
    "source_mean",
    "source_variance",
    "adaptation_momentum",
    "adapted_batches",
    "adapting",
)


def _check_min_momentum(min_momentum, initial_momentum):
    high = min(initial_momentum, 1.0 - initial_momentum)
    allowed = (
        f"in [0, {high:g}] (at most initial_momentum={initial_momentum:g}, "
        "and initial_momentum + min_momentum at most 1)"
    )
    value = validation.check_in_interval(
        "min_momentum", min_momentum, 0.0, 1.0, True, True
    )
    if value > high:
        validation.fail("min_momentum", allowed, min_momentum)
    return value


@keras_batchopt_export("keras_batchopt.layers.MomentumDecayBatchNormalization")
class MomentumDecayBatchNormalization(ChannelNormalization):
    """Batch normalization whose moving statistics adapt to the test data,
    with a momentum that decays exponentially (DUA, Mirza et al.; the
    low-order statistics of Liu et al.'s source-free adaptation).

    A model trained on one distribution and run on a shifted one
    normalizes with source statistics that no longer fit. This layer
    updates its moving statistics from each batch it sees, with a
    momentum that starts at `initial_momentum` and decays by
    `decay_factor` per batch, so that the first test batches move the
    statistics most and later ones refine them. With `adapting` on (the
    default), each call with a usable batch does, in this order:

    ```
    m = m * decay_factor                  # m starts at initial_momentum
    w = m + min_momentum                  # the weight of the new batch
    moving_mean = (1 - w) * moving_mean + w * mean(x)
    moving_variance = (1 - w) * moving_variance + w * var_unbiased(x)
    ```

    the batch statistics taken over every axis but the channel axis, the
    variance unbiased (`n / (n - 1)`) as PyTorch's running variance. `w`
    is PyTorch's momentum (the weight of the new batch): Keras's
    `momentum` is `1 - w`. The decay is applied before its first use
    (the first batch has `w = initial_momentum * decay_factor +
    min_momentum`), and `min_momentum` is added to the decayed part, as
    in the official code: `w` tends to `min_momentum` from above.

    The output, in inference (`model.predict`, `model(x)`): normalized
    with the batch mean and biased variance for `normalize_with="batch"`
    (the official code's adaptation pass: PyTorch's BatchNorm in train
    mode), or with the just-updated moving statistics for
    `normalize_with="moving"` (adapt and predict in one pass). In
    training (`training=True` on a trainable layer): batch statistics,
    with the update above. With `adapting` off (`layer.adapting =
    False`), the layer is `keras.layers.BatchNormalization`: inference
    with the moving statistics and no update; training updates them with
    the fixed Keras `momentum`.

    State: the momentum `m` and the number of adapted batches are
    non-trainable variables, so a compiled predict function is not
    traced again, and they are saved with the model (save and load
    mid-stream, then continue: the same as an uninterrupted stream).
    The first adapted batch snapshots the source statistics and affine
    parameters (`source_mean`, `source_variance`, `source_gamma`,
    `source_beta`); `reset()` returns to them and to `initial_momentum`.
    Statistics are float32 under mixed precision.

    A batch that cannot be used leaves the state unchanged and is
    normalized with the moving statistics: one whose statistics are not
    finite (a NaN or Inf in it; its finite samples still get finite
    outputs), and one with fewer than two values per channel (a `Dense`
    output at batch size 1: PyTorch raises there). For a single image,
    `keras_batchopt.adaptation.adapt_on_sample` adapts on augmented
    copies of it, as DUA does.

    Args:
        initial_momentum: the weight of the new batch before any decay
            (PyTorch's convention), in [0, 1]. Defaults to `0.1`, the
            official start value.
        decay_factor: the factor the momentum is multiplied by at each
            adapted batch, in (0, 1]. Defaults to `0.94`, the official
            value.
        min_momentum: the constant added to the decayed momentum, in
            [0, min(initial_momentum, 1 - initial_momentum)]. Defaults to
            `0.005`, the official value.
        normalize_with: `"batch"` (default, the official code) or
            `"moving"`: the statistics that normalize a batch in
            inference while adapting.
        axis: the channel axis, an int. `-1` (default) for channels_last,
            `1` for channels_first.
        momentum: Keras's momentum (the weight of the old statistics) for
            training with `adapting` off, in [0, 1). Defaults to `0.99`.
        epsilon: a float > 0 added to the variance. Defaults to `1e-3`, as
            in Keras (PyTorch and the official code use `1e-5`).
        center, scale, beta_initializer, gamma_initializer,
        moving_mean_initializer, moving_variance_initializer,
        beta_regularizer, gamma_regularizer, beta_constraint,
        gamma_constraint: as in `keras.layers.BatchNormalization`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        inputs: a tensor of rank >= 2, batch first.
        training: whether to normalize with the batch statistics (as in
            training) or as set by `normalize_with`.
        mask: an optional boolean mask of the input's shape without the
            channel axis; the batch statistics are then taken over the
            real positions only.

    Returns:
        A tensor of the same shape, in the layer's compute dtype.

    Example:

    >>> import keras, keras_batchopt
    >>> import numpy as np
    >>> layer = keras_batchopt.layers.MomentumDecayBatchNormalization(
    ...     normalize_with="moving", epsilon=1e-5)
    >>> x = np.array([[1.0], [3.0]], "float32")  # mean 2, unbiased var 2
    >>> _ = layer(x)  # moving statistics 0 and 1 before
    >>> w = 0.1 * 0.94 + 0.005
    >>> [round(float(v), 5) for v in (layer.moving_mean[0], 2 * w)]
    [0.198, 0.198]
    >>> layer.reset()
    >>> float(layer.moving_mean[0]), int(layer.adapted_batches)
    (0.0, 0)

    Note:
        The official code sets the momentum of every BatchNorm of the
        network before each adaptation pass; here each layer holds its
        own (equal) momentum, advanced by each batch it adapts on. A
        layer that skips a batch (non-finite statistics) does not
        advance, where the official code would have. Training with
        `adapting` on uses the decaying momentum too: that is Liu et
        al.'s adaptation, where the affine parameters are trained while
        the statistics adapt (see
        `keras_batchopt.adaptation.batch_normalization_consistency_loss`).
        On torch, an inference step without a mask runs as plain torch
        operations with the same arithmetic (eager `keras.ops` calls on
        small tensors cost more than their work);
        `keras_batchopt.config.fast_paths(False)` runs the generic code.

    References:
        - Mirza, Micorek, Possegger and Bischof, 2022, [The Norm Must Go
          On: Dynamic Unsupervised Domain Adaptation by Normalization](
          https://arxiv.org/abs/2112.00463) (CVPR 2022).
        - Official code: `methods/dua.py` of
          https://github.com/jmiemirza/DUA at commit
          5a2197154405ce947006558180f430d64b99c626.
        - Liu, Xing, Yang, El Fakhri and Woo, 2021, [Adapting
          Off-the-Shelf Source Segmenter for Target Medical Image
          Segmentation](https://arxiv.org/abs/2106.12497) (MICCAI 2021).
    """

    batch_normalization_state = True
    adaptation_state = ADAPTATION_STATE

    def __init__(
        self,
        initial_momentum=0.1,
        decay_factor=0.94,
        min_momentum=0.005,
        normalize_with="batch",
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        **kwargs,
    ):
        super().__init__(
            axis=axis, momentum=momentum, epsilon=epsilon, **kwargs
        )
        self.initial_momentum = validation.check_in_interval(
            "initial_momentum", initial_momentum, 0.0, 1.0, True, True
        )
        self.decay_factor = validation.check_in_interval(
            "decay_factor", decay_factor, 0.0, 1.0, False, True
        )
        self.min_momentum = _check_min_momentum(
            min_momentum, self.initial_momentum
        )
        self.normalize_with = validation.check_one_of(
            "normalize_with", normalize_with, NORMALIZE_WITH
        )
        self.supports_masking = True
        self._adapting_at_build = True

    def build(self, input_shape):
        channels = self.channels(input_shape)
        self.gamma, self.beta = self.build_affine(channels)
        self.build_moving_statistics(channels)
        self.source_gamma = self.source_beta = None
        if self.scale:
            self.source_gamma = self._state("source_gamma", (channels,), "ones")
        if self.center:
            self.source_beta = self._state("source_beta", (channels,), "zeros")
        self.source_mean = self._state("source_mean", (channels,), "zeros")
        self.source_variance = self._state(
            "source_variance", (channels,), "ones"
        )
        self.adaptation_momentum = self._state(
            "adaptation_momentum", (), self.initial_momentum
        )
        self.adapted_batches = self._state(
            "adapted_batches", (), "zeros", "int32"
        )
        self._adapting = self._state(
            "adapting",
            (),
            "ones" if self._adapting_at_build else "zeros",
            "int32",
        )

    def _state(self, name, shape, initializer, dtype="float32"):
        if isinstance(initializer, float):
            initializer = initializers.Constant(initializer)
        return self.add_weight(
            shape=shape,
            name=name,
            initializer=initializer,
            dtype=dtype,
            trainable=False,
            autocast=False,
        )

    @property
    def adapting(self):
        """Whether each batch updates the moving statistics (a bool; set
        it to switch adaptation on or off without retracing)."""
        return bool(ops.convert_to_numpy(self._adapting))

    @adapting.setter
    def adapting(self, value):
        value = validation.check_bool("adapting", value)
        if self.built:
            self._adapting.assign(int(value))
        self._adapting_at_build = value

    def _pairs(self):
        """(source, current) for every weight `reset` restores."""
        pairs = [
            (self.source_mean, self.moving_mean),
            (self.source_variance, self.moving_variance),
        ]
        if self.scale:
            pairs.append((self.source_gamma, self.gamma))
        if self.center:
            pairs.append((self.source_beta, self.beta))
        return pairs

    def reset(self):
        """Returns to the source statistics, affine parameters and
        `initial_momentum` (a no-op before the first adapted batch)."""
        if int(ops.convert_to_numpy(self.adapted_batches)) > 0:
            for source, current in self._pairs():
                # A copy: JAX must not find one buffer in two variables.
                current.assign(ops.copy(source.value))
        self.adaptation_momentum.assign(self.initial_momentum)
        self.adapted_batches.assign(0)

    def call(self, inputs, training=None, mask=None):
        x = statistics.upcast(inputs)
        axis = self.channel_axis(len(x.shape))
        statistics.check_mask(mask, x)
        fast = statistics.fast_module(FAST_MODULE)
        if fast is not None and mask is None and not self.is_training(training):
            outputs = fast.momentum_decay_inference(self, x, axis)
            return ops.cast(outputs, self.compute_dtype)
        mean, variance, count = batch_moments(x, axis, mask)
        usable = ops.logical_and(
            count >= 2,
            ops.logical_and(
                ops.all(ops.isfinite(mean)), ops.all(ops.isfinite(variance))
            ),
        )
        flag = self._adapting.value > 0
        adapting = ops.logical_and(usable, flag)
        if self.is_training(training):
            self._keras_update(mean, variance, flag)
            self._adapt(mean, variance, count, adapting)
        else:
            moving = self._adapt(mean, variance, count, adapting)
            if self.normalize_with == "moving":
                mean, variance = moving
            else:
                mean = ops.where(adapting, mean, moving[0])
                variance = ops.where(adapting, variance, moving[1])
        return self.batch_normalize(
            x, ops.cast(mean, x.dtype), ops.cast(variance, x.dtype), axis
        )

    def _keras_update(self, mean, variance, flag):
        """Keras's moving average with the fixed `momentum` where the
        `adapting` flag is off (as Keras's BatchNormalization, which a NaN
        batch poisons)."""
        for variable, value in (
            (self.moving_mean, mean),
            (self.moving_variance, variance),
        ):
            old = variable.value
            value = ops.cast(value, "float32")
            new = old * self.momentum + value * (1 - self.momentum)
            variable.assign(ops.where(flag, old, new))

    def _adapt(self, mean, variance, count, adapting):
        """The update with the decaying momentum where `adapting`; returns
        the (updated) moving statistics."""
        first = ops.logical_and(adapting, self.adapted_batches.value == 0)
        for source, current in self._pairs():
            source.assign(ops.where(first, current.value, source.value))
        momentum = self.adaptation_momentum.value
        decayed = momentum * self.decay_factor
        weight = decayed + self.min_momentum
        variance = statistics.unbiased(variance, count)
        moving = []
        for variable, value in (
            (self.moving_mean, mean),
            (self.moving_variance, variance),
        ):
            old = variable.value
            value = ops.where(adapting, ops.cast(value, "float32"), 0.0)
            new = ops.where(
                adapting, (1.0 - weight) * old + weight * value, old
            )
            variable.assign(new)
            moving.append(new)
        self.adaptation_momentum.assign(ops.where(adapting, decayed, momentum))
        self.adapted_batches.assign(
            self.adapted_batches.value + ops.cast(adapting, "int32")
        )
        return moving

    def compute_mask(self, inputs, mask=None):
        return mask

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "initial_momentum": self.initial_momentum,
                "decay_factor": self.decay_factor,
                "min_momentum": self.min_momentum,
                "normalize_with": self.normalize_with,
            }
        )
        return config
