"""A per-channel affine: what a folded normalization layer becomes."""

import keras
from keras import ops

from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.normalization import statistics
from keras_batchopt.src.layers.normalization.base import check_axis


@keras_batchopt_export("keras_batchopt.layers.ChannelAffine")
class ChannelAffine(keras.layers.Layer):
    """`y = x * scale + shift` per channel, with fixed weights.

    `keras_batchopt.layers.fold_normalization` puts this layer where a
    normalization layer's inference affine could not be merged into an
    adjacent `Dense` (for instance in front of `MultiHeadAttention`). It
    behaves the same in training and inference, and its weights are not
    trainable by default.

    Args:
        axis: the channel axis.
        **kwargs: base `Layer` arguments (`trainable=True` makes the scale
            and shift trainable).

    Example:

    >>> import numpy as np
    >>> import keras, keras_batchopt
    >>> layer = keras_batchopt.layers.ChannelAffine()
    >>> layer.build((None, 3))
    >>> layer.set_weights([np.full(3, 2.0), np.ones(3)])
    >>> keras.ops.convert_to_numpy(layer(np.ones((1, 3), "float32"))).tolist()
    [[3.0, 3.0, 3.0]]

    References:
        - Yang et al. "Unified Normalization for Accelerating and
          Stabilizing Transformers." ACM MM 2022 (folding a normalization
          into an affine at inference).
    """

    def __init__(self, axis=-1, trainable=False, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        self.axis = check_axis(axis)
        self.supports_masking = True

    def build(self, input_shape):
        channels = input_shape[self.axis]
        self.scale = self.add_weight(
            shape=(channels,), name="scale", initializer="ones"
        )
        self.shift = self.add_weight(
            shape=(channels,), name="shift", initializer="zeros"
        )

    def call(self, inputs, mask=None):
        rank = len(inputs.shape)
        shape = statistics.channel_shape(rank, self.axis % rank, -1)
        scale = ops.reshape(ops.cast(self.scale, inputs.dtype), shape)
        shift = ops.reshape(ops.cast(self.shift, inputs.dtype), shape)
        return inputs * scale + shift

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["axis"] = self.axis
        return config
