"""NumPy reference for BatchFormer (Hou, Yu and Tao, CVPR 2022).

Source: zhihou7/BatchFormer (https://github.com/zhihou7/BatchFormer,
commit 305efaa6c54a0cfd69c99a919e48deb9f84040d8), README function
`BatchFormer(x, y, encoder, is_training)`: in training,
`x' = encoder(x.unsqueeze(1)).squeeze(1)` with
`encoder = torch.nn.TransformerEncoderLayer(C, 4, C, 0.5)` (sequence-first,
so the sequence is the batch), returns `cat([x, x'])` and `cat([y, y])`;
in inference it returns `x, y`. The encoder layer is PyTorch's post-norm
layer with ReLU and LayerNorm eps 1e-5, here with dropout off (the
numbers tested are deterministic). Weights are in PyTorch's layout
(`in_proj_weight` of shape `(3C, C)`, `linear.weight` of shape
`(out, in)`). Float64 throughout. `variant` switches exist only to prove
the tests sensitive.
"""

import numpy as np

VARIANTS = (
    "correct",
    "pre_norm",  # norm_first=True
    "attend_within_sample",  # (N, 1, C) read batch-first: no cross-talk
    "no_head_split",  # one head of size C
)


def _layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _attention(x, w, num_heads, variant):
    """Multi-head self-attention over the rows of `x` (N, C)."""
    n, c = x.shape
    q, k, v = np.split(x @ w["in_proj_weight"].T + w["in_proj_bias"], 3, -1)
    heads = 1 if variant == "no_head_split" else num_heads
    d = c // heads

    def split(t):
        return t.reshape(n, heads, d).transpose(1, 0, 2)

    q, k, v = split(q), split(k), split(v)
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(d)
    if variant == "attend_within_sample":
        scores = np.where(np.eye(n, dtype=bool), scores, -np.inf)
    out = (_softmax(scores) @ v).transpose(1, 0, 2).reshape(n, c)
    return out @ w["out_proj_weight"].T + w["out_proj_bias"]


def encoder_layer(x, w, num_heads=4, eps=1e-5, variant="correct"):
    """`torch.nn.TransformerEncoderLayer` (ReLU, dropout off) on the
    sequence of the `N` rows of `x`."""

    def feed_forward(h):
        hidden = np.maximum(h @ w["linear1_weight"].T + w["linear1_bias"], 0)
        return hidden @ w["linear2_weight"].T + w["linear2_bias"]

    def norm(h, i):
        return _layer_norm(h, w[f"norm{i}_weight"], w[f"norm{i}_bias"], eps)

    if variant == "pre_norm":
        h = x + _attention(norm(x, 1), w, num_heads, variant)
        return h + feed_forward(norm(h, 2))
    h = norm(x + _attention(x, w, num_heads, variant), 1)
    return norm(h + feed_forward(h), 2)


def batchformer(x, y, w, training, num_heads=4, variant="correct"):
    """The official function: `(cat([x, x']), cat([y, y]))` in training."""
    if not training:
        return x, y
    out = encoder_layer(x, w, num_heads, variant=variant)
    return np.concatenate([x, out]), np.concatenate([y, y])


def random_weights(channels, hidden, rng):
    """PyTorch-layout weights with non-trivial norms and biases."""
    c, f = channels, hidden
    shapes = {
        "in_proj_weight": (3 * c, c),
        "in_proj_bias": (3 * c,),
        "out_proj_weight": (c, c),
        "out_proj_bias": (c,),
        "linear1_weight": (f, c),
        "linear1_bias": (f,),
        "linear2_weight": (c, f),
        "linear2_bias": (c,),
        "norm1_weight": (c,),
        "norm1_bias": (c,),
        "norm2_weight": (c,),
        "norm2_bias": (c,),
    }
    w = {k: rng.normal(0, 0.5, s) for k, s in shapes.items()}
    w["norm1_weight"] += 1.0
    w["norm2_weight"] += 1.0
    return w


def to_keras_weights(w, num_heads):
    """The same weights in the order and layout of
    `keras_batchopt.layers.BatchFormer.get_weights()`: attention
    (query, key, value kernels and biases, output kernel and bias), then
    dense_1, dense_2, norm_1, norm_2."""
    c = w["out_proj_weight"].shape[0]
    d = c // num_heads
    out = []
    for wq, bq in zip(
        np.split(w["in_proj_weight"], 3), np.split(w["in_proj_bias"], 3)
    ):
        out += [wq.T.reshape(c, num_heads, d), bq.reshape(num_heads, d)]
    out += [
        w["out_proj_weight"].T.reshape(num_heads, d, c),
        w["out_proj_bias"],
        w["linear1_weight"].T,
        w["linear1_bias"],
        w["linear2_weight"].T,
        w["linear2_bias"],
        w["norm1_weight"],
        w["norm1_bias"],
        w["norm2_weight"],
        w["norm2_bias"],
    ]
    return out
