"""The base of our batch-statistics layers: axis, affine and moving stats."""

import keras
from keras import constraints
from keras import initializers
from keras import ops
from keras import regularizers

from keras_batchopt.src import validation
from keras_batchopt.src.layers.normalization import statistics


def check_axis(axis):
    """An int channel axis (Keras's `axis`; -1 for channels_last, 1 for
    channels_first)."""
    if isinstance(axis, bool) or not isinstance(axis, int):
        validation.fail("axis", "an int", axis)
    return axis


class ChannelNormalization(keras.layers.Layer):
    """Per-channel affine and moving statistics, as Keras's BN keeps them.

    Subclasses implement `call`; this class holds the arguments shared with
    `keras.layers.BatchNormalization` (`synchronized` included: subclasses
    pass their batch moments through `statistics.synchronize` or
    `statistics.synchronize_mean`, and the batch sums of a custom backward
    pass through `statistics.all_reduce_sum`), their checks, the weights
    (created with `autocast=False`, so that they stay float32 under mixed
    precision) and the config.
    """

    def __init__(
        self,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        synchronized=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.axis = check_axis(axis)
        self.synchronized = statistics.check_synchronized(
            type(self).__name__, synchronized
        )
        self.momentum = validation.check_beta("momentum", momentum)
        self.epsilon = validation.check_positive("epsilon", epsilon)
        self.center = validation.check_bool("center", center)
        self.scale = validation.check_bool("scale", scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(
            moving_variance_initializer
        )
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.beta_constraint = constraints.get(beta_constraint)
        self.gamma_constraint = constraints.get(gamma_constraint)
        self.supports_masking = False
        self.gamma = None
        self.beta = None

    # Layers whose input must have spatial axes set this to 3.
    min_rank = 2

    # True where the layer's weights are those of
    # keras.layers.BatchNormalization (gamma, beta, moving_mean,
    # moving_variance, one per channel) and its inference with them is
    # Keras's, at least for some setting: keras_batchopt.adaptation
    # converts such layers to and from Keras's BatchNormalization.
    batch_normalization_state = False

    def channel_axis(self, rank):
        """The channel axis as a non-negative int, checked against `rank`."""
        if rank < self.min_rank:
            raise ValueError(
                f"{type(self).__name__} expects inputs of rank >= "
                f"{self.min_rank}. Received: inputs of rank {rank}"
            )
        if not -rank <= self.axis < rank or self.axis % rank == 0:
            validation.fail(
                "axis",
                f"a channel axis of an input of rank {rank}, in [1, {rank})"
                f" or [-{rank - 1}, -1] (axis 0 is the batch)",
                self.axis,
            )
        return self.axis % rank

    def channels(self, input_shape):
        """The number of channels; it must be known when building."""
        axis = self.channel_axis(len(input_shape))
        channels = input_shape[axis]
        if channels is None:
            raise ValueError(
                f"{type(self).__name__} needs the channel axis {self.axis} "
                f"of its input to be known. Received: input_shape="
                f"{tuple(input_shape)}"
            )
        return channels

    def build_affine(self, channels, prefix=""):
        """`gamma` and `beta` of shape `(channels,)` per `scale`/`center`."""
        gamma = beta = None
        if self.scale:
            gamma = self.add_weight(
                shape=(channels,),
                name=prefix + "gamma",
                initializer=self.gamma_initializer,
                regularizer=self.gamma_regularizer,
                constraint=self.gamma_constraint,
                autocast=False,
            )
        if self.center:
            beta = self.add_weight(
                shape=(channels,),
                name=prefix + "beta",
                initializer=self.beta_initializer,
                regularizer=self.beta_regularizer,
                constraint=self.beta_constraint,
                autocast=False,
            )
        return gamma, beta

    def build_moving_statistics(self, channels):
        """`moving_mean` and `moving_variance` of shape `(channels,)`."""
        self.moving_mean = self.add_weight(
            shape=(channels,),
            name="moving_mean",
            initializer=self.moving_mean_initializer,
            trainable=False,
            autocast=False,
        )
        self.build_moving_variance(channels)

    def build_moving_variance(self, channels):
        """`moving_variance` of shape `(channels,)`, float32."""
        self.moving_variance = self.add_weight(
            shape=(channels,),
            name="moving_variance",
            initializer=self.moving_variance_initializer,
            trainable=False,
            autocast=False,
        )

    def is_training(self, training):
        """Batch statistics only when training and trainable, as in Keras's
        BatchNormalization (a frozen layer runs in inference mode)."""
        return bool(training) and self.trainable

    def read(self, variable, dtype):
        """A weight cast to the computation dtype, or None."""
        return None if variable is None else ops.cast(variable, dtype)

    def batch_normalize(self, x, mean, variance, axis):
        """`x` normalized per channel with `mean` and `variance` (in `x`'s
        dtype), then scaled by `gamma` and shifted by `beta` where they
        exist; cast to the compute dtype."""
        outputs = ops.batch_normalization(
            x,
            mean,
            variance,
            axis=axis,
            offset=self.read(self.beta, x.dtype),
            scale=self.read(self.gamma, x.dtype),
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        self.channel_axis(len(input_shape))
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "axis": self.axis,
                "momentum": self.momentum,
                "epsilon": self.epsilon,
                "center": self.center,
                "scale": self.scale,
                "beta_initializer": initializers.serialize(
                    self.beta_initializer
                ),
                "gamma_initializer": initializers.serialize(
                    self.gamma_initializer
                ),
                "moving_mean_initializer": initializers.serialize(
                    self.moving_mean_initializer
                ),
                "moving_variance_initializer": initializers.serialize(
                    self.moving_variance_initializer
                ),
                "beta_regularizer": regularizers.serialize(
                    self.beta_regularizer
                ),
                "gamma_regularizer": regularizers.serialize(
                    self.gamma_regularizer
                ),
                "beta_constraint": constraints.serialize(self.beta_constraint),
                "gamma_constraint": constraints.serialize(
                    self.gamma_constraint
                ),
                "synchronized": self.synchronized,
            }
        )
        return config
