"""The small models of the compare job.

- `mlp`: two hidden dense layers.
- `cnn`: two 3x3 convolutions ("same" padding, so 8x8 digits fit), each
  followed by a normalization layer of `catalog.LAYERS` (none by default),
  a ReLU and 2x2 max pooling.
- `transformer`: images cut into patches, one pre-norm transformer block
  (two-head self-attention and an MLP) and average pooling over tokens.

Every model ends in a dense head named `catalog.HEAD_NAME`.
"""

import keras

from keras_batchopt import layers as batchopt_layers
from keras_batchopt.src.compare import catalog

MODELS = ("mlp", "cnn", "transformer")
WIDTH = 32  # transformer width


def build_model(kind, image_shape, num_classes, layer="none", context=None):
    """Builds the classifier that every run of a job trains.

    Args:
        kind: `"mlp"`, `"cnn"` or `"transformer"`.
        image_shape: `(height, width)` of the grayscale inputs.
        num_classes: the number of output classes.
        layer: a name from `catalog.LAYERS` valid for `kind` (`"none"`
            for the MLP).
        context: a `catalog.LayerContext` (batch size and run length),
            needed by the layers whose settings depend on them.
    """
    if kind not in MODELS:
        raise ValueError(
            f"Unknown model {kind!r}. Expected one of: {', '.join(MODELS)}"
        )
    context = context or catalog.LayerContext(32, 1000)
    if kind == "mlp":
        if layer != "none":
            raise ValueError(f"The mlp takes no layer, got {layer!r}.")
        inputs = keras.Input(tuple(image_shape))
        x = keras.layers.Flatten()(inputs)
        x = keras.layers.Dense(256, activation="relu")(x)
        x = keras.layers.Dense(128, activation="relu")(x)
    else:
        catalog.check_layer_names([layer], kind)
        build = _cnn if kind == "cnn" else _transformer
        inputs, x = build(image_shape, catalog.LAYERS[layer], context)
    outputs = keras.layers.Dense(num_classes, name=catalog.HEAD_NAME)(x)
    return keras.Model(inputs, outputs, name=f"compare_{kind}")


def _channels_last():
    return keras.config.image_data_format() == "channels_last"


def _cnn(image_shape, spec, context):
    axis = -1 if _channels_last() else 1
    shape = (*image_shape, 1) if axis == -1 else (1, *image_shape)
    inputs = keras.Input(shape)
    x = inputs
    context = catalog.LayerContext(
        context.batch_size, context.total_steps, axis
    )
    for i, filters in enumerate((16, 32)):
        norm = spec.make(context)
        kwargs = dict(padding="same", use_bias=norm is None)
        if spec.conv == "ws":
            conv = batchopt_layers.WSConv2D(filters, 3, **kwargs)
        elif spec.conv == "scaled_ws":
            gamma = 1.0 if i == 0 else "relu"
            conv = batchopt_layers.ScaledWSConv2D(
                filters, 3, gamma=gamma, **kwargs
            )
        else:
            conv = keras.layers.Conv2D(filters, 3, **kwargs)
        x = conv(x)
        if norm is not None:
            x = norm(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    return inputs, x


class PositionEmbedding(keras.layers.Layer):
    """Adds a learned vector per token position."""

    def build(self, input_shape):
        self.embedding = self.add_weight(
            shape=tuple(input_shape[1:]),
            initializer=keras.initializers.RandomNormal(stddev=0.02),
            name="embedding",
        )

    def call(self, x):
        return x + self.embedding


def _patch_size(image_shape):
    # 4x4 patches for 28x28 images (49 tokens), 2x2 for 8x8 (16 tokens).
    size = 4 if min(image_shape) > 8 else 2
    while any(s % size for s in image_shape):
        size //= 2
    return size


def _norm(spec, context):
    layer = spec.make(context)
    return (lambda x: x) if layer is None else layer


def _transformer(image_shape, spec, context):
    height, width = image_shape
    p = _patch_size(image_shape)
    inputs = keras.Input((height, width))
    x = keras.layers.Reshape((height // p, p, width // p, p))(inputs)
    x = keras.layers.Permute((1, 3, 2, 4))(x)
    x = keras.layers.Reshape(((height // p) * (width // p), p * p))(x)
    x = keras.layers.Dense(WIDTH)(x)
    x = PositionEmbedding()(x)
    h = _norm(spec, context)(x)
    h = keras.layers.MultiHeadAttention(2, WIDTH // 2)(h, h)
    x = keras.layers.Add()([x, h])
    h = _norm(spec, context)(x)
    h = keras.layers.Dense(2 * WIDTH, activation="gelu")(h)
    h = keras.layers.Dense(WIDTH)(h)
    x = keras.layers.Add()([x, h])
    x = _norm(spec, context)(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return inputs, x
