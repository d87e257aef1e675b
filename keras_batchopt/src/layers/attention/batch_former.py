"""BatchFormer: a transformer encoder layer across the mini-batch."""

import keras
from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export


@keras_batchopt_export("keras_batchopt.layers.BatchFormer")
class BatchFormer(keras.layers.Layer):
    """A transformer encoder layer whose sequence is the mini-batch.

    In training, the `(N, C)` features of a mini-batch are read as one
    sequence of length `N`, so each sample attends to the other samples
    of the batch. With `z = MultiHeadAttention(x, x, x)` over that
    sequence (`num_heads` heads of size `C / num_heads`, dropout on the
    attention weights),

        h = LayerNorm(x + Dropout(z))
        x' = LayerNorm(h + Dropout(W2 Dropout(relu(W1 h + b1)) + b2))

    (post-norm, as PyTorch's `TransformerEncoderLayer`), and the layer
    returns `concatenate([x, x'])` along the batch axis: `2N` rows, the
    original features first. The classifier after it is shared by both
    streams; `keras_batchopt.strategies.enable_batchformer_training`
    duplicates the labels and sample weights so that `model.fit` works
    unchanged. In inference the layer is the identity (no cost and no
    dependence on the other samples).

    Args:
        num_heads: attention heads; must divide the feature size `C`
            (official: 4).
        intermediate_dim: width of the feed-forward block; `None` uses
            `C` (official).
        dropout: dropout rate of the attention weights, the attention
            output, the feed-forward hidden layer and its output, in
            [0, 1) (official: 0.5).
        layer_norm_epsilon: epsilon of both layer normalizations
            (PyTorch's default 1e-5).
        seed: seed of the dropout masks.
        **kwargs: base `Layer` arguments.

    Example:

    >>> import numpy as np
    >>> import keras, keras_batchopt
    >>> layer = keras_batchopt.layers.BatchFormer(num_heads=2)
    >>> x = np.random.rand(6, 8).astype("float32")
    >>> tuple(layer(x, training=True).shape)
    (12, 8)
    >>> bool(np.allclose(layer(x, training=False), x))
    True

    References:
        - [Hou, Yu and Tao, 2022](https://arxiv.org/abs/2203.01522),
          BatchFormer: Learning to Explore Sample Relationships for Robust
          Representation Learning (CVPR 2022).
        - Official code: https://github.com/zhihou7/BatchFormer (commit
          305efaa6c54a0cfd69c99a919e48deb9f84040d8), README
          `BatchFormer(x, y, encoder, is_training)` with
          `torch.nn.TransformerEncoderLayer(C, 4, C, 0.5)`.

    Note:
        The layer accepts 2D features `(batch, features)` only (the
        BatchFormer of the paper sits between the backbone's pooled
        features and the classifier). Keras's `MultiHeadAttention` stores
        the query/key/value projections per head (`(C, heads, C/heads)`)
        where PyTorch stacks them in one `(3C, C)` matrix; the maps are
        the same.
    """

    def __init__(
        self,
        num_heads=4,
        intermediate_dim=None,
        dropout=0.5,
        layer_norm_epsilon=1e-5,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = validation.check_positive_int("num_heads", num_heads)
        self.intermediate_dim = validation.check_positive_int_or_none(
            "intermediate_dim", intermediate_dim
        )
        self.dropout = validation.check_in_interval(
            "dropout", dropout, 0.0, 1.0, True, False
        )
        self.layer_norm_epsilon = validation.check_positive(
            "layer_norm_epsilon", layer_norm_epsilon
        )
        self.seed = seed

    def build(self, input_shape):
        if len(input_shape) != 2 or input_shape[-1] is None:
            raise ValueError(
                "BatchFormer expects features of shape (batch, features) "
                f"with a known feature size. Received: {input_shape}"
            )
        channels = int(input_shape[-1])
        if channels % self.num_heads:
            validation.fail(
                "num_heads",
                f"a divisor of the feature size {channels}",
                self.num_heads,
            )
        hidden = self.intermediate_dim or channels
        policy = self.dtype_policy
        self.attention = keras.layers.MultiHeadAttention(
            self.num_heads,
            channels // self.num_heads,
            dropout=self.dropout,
            seed=self.seed,
            dtype=policy,
            name="attention",
        )
        self.attention.build((1, None, channels), (1, None, channels))
        self.dense_1 = keras.layers.Dense(
            hidden, activation="relu", dtype=policy, name="dense_1"
        )
        self.dense_1.build((None, channels))
        self.dense_2 = keras.layers.Dense(
            channels, dtype=policy, name="dense_2"
        )
        self.dense_2.build((None, hidden))
        self.norm_1, self.norm_2 = (
            keras.layers.LayerNormalization(
                epsilon=self.layer_norm_epsilon, dtype=policy, name=name
            )
            for name in ("norm_1", "norm_2")
        )
        self.norm_1.build((None, channels))
        self.norm_2.build((None, channels))
        seeds = [
            None if self.seed is None else self.seed + i for i in (1, 2, 3)
        ]
        self.dropouts = [
            keras.layers.Dropout(self.dropout, seed=s, dtype=policy)
            for s in seeds
        ]

    def encode(self, inputs, training=None):
        """The encoder layer alone: `x'` for features `inputs`."""
        drop_attention, drop_hidden, drop_output = self.dropouts
        sequence = inputs[None]
        attended = self.attention(sequence, sequence, training=training)[0]
        h = self.norm_1(inputs + drop_attention(attended, training=training))
        hidden = drop_hidden(self.dense_1(h), training=training)
        out = drop_output(self.dense_2(hidden), training=training)
        return self.norm_2(h + out)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        return ops.concatenate([inputs, self.encode(inputs, training)], 0)

    def compute_output_shape(self, input_shape):
        return (None,) + tuple(input_shape[1:])

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            intermediate_dim=self.intermediate_dim,
            dropout=self.dropout,
            layer_norm_epsilon=self.layer_norm_epsilon,
            seed=self.seed,
        )
        return config
