"""NumPy (float64) references of the official normalization modules.

Written from the official code, in its NCHW layout, with PyTorch
`torch.nn.BatchNorm2d` semantics wherever the official module is a PyTorch
BatchNorm (biased variance to normalize, unbiased for the running variance,
`momentum` the weight of the new value).
Each function returns the output and the new state; states are dicts of
float64 arrays.

Sources (read, not copied):
* Ghost BN: `main_gbn.py` of https://github.com/eladhoffer/bigBatch at
  commit 0c69f288a6172a292aad2719e985a4eb80b8e33a (Hoffer, Hubara and
  Soudry, arXiv 1705.08741); tf-keras 2's
  `tf_keras/legacy_tf_layers/normalization_test.py::testGhostBN4DimsAxis3`
  (https://github.com/keras-team/tf-keras at commit
  dd0a7237b9b24132dba3f491f3c84b0094ab796e).
* Weight Standardization: the PyTorch `Conv2d` in the README of
  https://github.com/joe-siyuan-qiao/WeightStandardization at commit
  d81e50d05ad449fe4b4b0a70d964a28050961dbb (Qiao et al., arXiv 1903.10520).
* Scaled Weight Standardization: `WSConv2D.standardize_weight` in
  `nfnets/base.py` of https://github.com/google-deepmind/deepmind-research
  at commit 68a1754d293e04d278dfb649b2d59512f32351a7 (Brock, De, Smith and
  Simonyan, arXiv 2102.06171).
* Batch-Channel Normalization: `BCNorm` and `EstBN` in the README of
  https://github.com/joe-siyuan-qiao/Batch-Channel-Normalization at commit
  0244c3e99417a511b60171fd86783c904d0132c0 (Qiao et al., arXiv 1911.09738).
* IBN-Net: `IBN` in `ibnnet/modules.py` of
  https://github.com/XingangPan/IBN-Net at commit
  d1673389b36c1180cf9bc35ea8260d84046da915 (Pan et al., arXiv 1807.09441).
* Region Normalization: `RN_binarylabel`, `RN_B`, `RN_L` and
  `SelfAware_Affine` in `rn.py` of https://github.com/geekyutao/RN at commit
  b0a9476bd78d0681b572aebb881766c2072f94dc (Yu et al., arXiv 1911.10375).
"""

import numpy as np


def _channel(v, ndim):
    return np.reshape(v, (1, -1) + (1,) * (ndim - 2))


def _axes_but_channel(ndim):
    return (0,) + tuple(range(2, ndim))


def torch_batch_norm(x, state, momentum, eps, training, affine=None):
    """PyTorch `BatchNorm{1,2,3}d` (momentum = weight of the new value)."""
    axes = _axes_but_channel(x.ndim)
    if training:
        mean = x.mean(axes)
        var = x.var(axes)
        n = x.size / x.shape[1]
        state = {
            "mean": (1 - momentum) * state["mean"] + momentum * mean,
            "var": (1 - momentum) * state["var"]
            + momentum * var * n / max(n - 1, 1),
        }
    else:
        mean, var = state["mean"], state["var"]
    y = (x - _channel(mean, x.ndim)) / np.sqrt(_channel(var, x.ndim) + eps)
    if affine is not None:
        y = y * _channel(affine[0], x.ndim) + _channel(affine[1], x.ndim)
    return y, state


# ------------------------------------------------------------------ Ghost BN
def ghost_bn_official(x, virtual_batch_size, state, momentum, eps, gamma, beta):
    """The official bigBatch run: one PyTorch BN forward per contiguous
    chunk (`x.split(virtual_batch_size)`), running stats updated per chunk.
    `momentum` is PyTorch's (weight of the new value)."""
    outputs = []
    for start in range(0, x.shape[0], virtual_batch_size):
        chunk = x[start : start + virtual_batch_size]
        y, state = torch_batch_norm(
            chunk, state, momentum, eps, True, (gamma, beta)
        )
        outputs.append(y)
    return np.concatenate(outputs), state


def ghost_bn_averaged(x, virtual_batch_size, state, momentum, eps, gamma, beta):
    """Contiguous ghost batches, one moving-statistics update per step with
    the size-weighted mean of the ghost means and biased variances
    (`momentum` is Keras's: weight of the old value)."""
    axes = _axes_but_channel(x.ndim)
    outputs, means, variances, sizes = [], [], [], []
    for start in range(0, x.shape[0], virtual_batch_size):
        chunk = x[start : start + virtual_batch_size]
        mean, var = chunk.mean(axes), chunk.var(axes)
        outputs.append(
            (chunk - _channel(mean, x.ndim))
            / np.sqrt(_channel(var, x.ndim) + eps)
            * _channel(gamma, x.ndim)
            + _channel(beta, x.ndim)
        )
        means.append(mean)
        variances.append(var)
        sizes.append(chunk.shape[0])
    weights = np.array(sizes, dtype=np.float64)[:, None] / x.shape[0]
    state = {
        "mean": momentum * state["mean"]
        + (1 - momentum) * (weights * np.array(means)).sum(0),
        "var": momentum * state["var"]
        + (1 - momentum) * (weights * np.array(variances)).sum(0),
    }
    return np.concatenate(outputs), state


def ghost_bn_tf_keras(x, virtual_batch_size, state, momentum, eps, gamma, beta):
    """tf-keras 2's `BatchNormalization(virtual_batch_size=v)`, as its own
    test `testGhostBN4DimsAxis3` writes it in NumPy: reshape to `[v, B/v,
    ...]`, so ghost `j` holds samples `j, j + B/v, ...` (interleaved); one
    update with the mean of the ghost statistics (Keras momentum)."""
    shape = x.shape
    ghosts = np.reshape(
        x, (virtual_batch_size, shape[0] // virtual_batch_size) + shape[1:]
    )
    axes = (0,) + tuple(range(3, ghosts.ndim))
    means = ghosts.mean(axes, keepdims=True)
    variances = ghosts.var(axes, keepdims=True)
    state = {
        "mean": momentum * state["mean"]
        + (1 - momentum) * means.mean(1).reshape(-1),
        "var": momentum * state["var"]
        + (1 - momentum) * variances.mean(1).reshape(-1),
    }
    c = (1, 1, -1) + (1,) * (ghosts.ndim - 3)
    y = (ghosts - means) / np.sqrt(variances + eps) * np.reshape(
        gamma, c
    ) + np.reshape(beta, c)
    return np.reshape(y, shape), state


def batch_norm_inference(x, state, eps, gamma, beta):
    return (x - _channel(state["mean"], x.ndim)) / np.sqrt(
        _channel(state["var"], x.ndim) + eps
    ) * _channel(gamma, x.ndim) + _channel(beta, x.ndim)


# ----------------------------------------------------- weight standardization
def weight_standardization_official(weight, eps=1e-5):
    """The official WS `Conv2d.forward` (WeightStandardization README): mean
    over the fan-in, unbiased std + eps. `weight` is PyTorch's
    `(out, in, *kernel)`."""
    mean = weight.reshape(weight.shape[0], -1).mean(1)
    centered = weight - mean.reshape((-1,) + (1,) * (weight.ndim - 1))
    std = centered.reshape(weight.shape[0], -1).std(1, ddof=1) + eps
    return centered / std.reshape((-1,) + (1,) * (weight.ndim - 1))


def scaled_weight_standardization_deepmind(weight, gain, eps=1e-4):
    """DeepMind NF-Nets `WSConv2D.standardize_weight` in PyTorch layout:
    `scale = rsqrt(max(var * fan_in, eps)) * gain; W * scale - mean *
    scale`, biased variance."""
    flat = weight.reshape(weight.shape[0], -1)
    fan_in = flat.shape[1]
    mean, var = flat.mean(1), flat.var(1)
    scale = 1.0 / np.sqrt(np.maximum(var * fan_in, eps)) * gain
    shift = mean * scale
    shape = (-1,) + (1,) * (weight.ndim - 1)
    return weight * scale.reshape(shape) - shift.reshape(shape)


# ------------------------------------------------------------------ BCN
def bcn_official(x, groups, state, moving_speed, eps, params, estimate):
    """The official `BCNorm` (README): `EstBN` (estimate=True) or
    `BatchNorm2d` (momentum = `moving_speed`), then a group normalization
    with a per-group affine. `params`: gamma, beta (per channel),
    group_gamma, group_beta (per group). Training mode."""
    gamma, beta, group_gamma, group_beta = params
    ndim = x.ndim
    if estimate:
        c = x.shape[1]
        flat = np.moveaxis(x, 1, 0).reshape(c, -1)
        batch_mean = flat.mean(1)
        around_old = ((flat - state["mean"][:, None]) ** 2).mean(1)
        state = {
            "mean": state["mean"] * (1 - moving_speed)
            + moving_speed * batch_mean,
            "var": state["var"] * (1 - moving_speed)
            + moving_speed * around_old,
        }
        out = (x - _channel(state["mean"], ndim)) / np.sqrt(
            _channel(state["var"], ndim) + 1e-5
        )
        out = out * _channel(gamma, ndim) + _channel(beta, ndim)
    else:
        out, state = torch_batch_norm(
            x, state, moving_speed, 1e-5, True, (gamma, beta)
        )
    n = x.shape[0]
    grouped = out.reshape(n * groups, -1)
    grouped = (grouped - grouped.mean(1, keepdims=True)) / np.sqrt(
        grouped.var(1, keepdims=True) + eps
    )
    grouped = grouped.reshape(n, groups, -1)
    grouped = grouped * group_gamma[None, :, None] + group_beta[None, :, None]
    return grouped.reshape(x.shape), state


def bcn_official_inference(x, groups, state, eps, params):
    """`BCNorm` in eval mode (the same for EstBN and BatchNorm2d)."""
    gamma, beta, group_gamma, group_beta = params
    out = batch_norm_inference(x, state, 1e-5, gamma, beta)
    n = x.shape[0]
    grouped = out.reshape(n * groups, -1)
    grouped = (grouped - grouped.mean(1, keepdims=True)) / np.sqrt(
        grouped.var(1, keepdims=True) + eps
    )
    grouped = grouped.reshape(n, groups, -1)
    grouped = grouped * group_gamma[None, :, None] + group_beta[None, :, None]
    return grouped.reshape(x.shape)


# ------------------------------------------------------------------ IBN
def ibn_official(x, ratio, state, momentum, eps, gamma, beta, training):
    """IBN-Net's `IBN`: the first `int(C * ratio)` channels through
    `InstanceNorm2d(affine=True)`, the rest through `BatchNorm2d` (PyTorch
    momentum), concatenated. `gamma`/`beta` cover all channels."""
    half = int(x.shape[1] * ratio)
    first, rest = x[:, :half], x[:, half:]
    spatial = tuple(range(2, x.ndim))
    mean = first.mean(spatial, keepdims=True)
    var = first.var(spatial, keepdims=True)
    out1 = (first - mean) / np.sqrt(var + eps)
    out1 = out1 * _channel(gamma[:half], x.ndim) + _channel(beta[:half], x.ndim)
    out2, state = torch_batch_norm(
        rest, state, momentum, eps, training, (gamma[half:], beta[half:])
    )
    return np.concatenate([out1, out2], axis=1), state


# ------------------------------------------------------------------ RN
def _batch_norm_no_affine(x, eps=1e-5):
    axes = _axes_but_channel(x.ndim)
    return (x - x.mean(axes, keepdims=True)) / np.sqrt(
        x.var(axes, keepdims=True) + eps
    )


def rn_binarylabel(x, label, eps=1e-5):
    """`RN_binarylabel.forward`, literally: fill each region's outside with
    its mean, batch-normalize (no affine, batch statistics), rescale."""

    def rn(region, mask):
        total = region.sum((0, 2, 3))
        size = mask.sum((0, 2, 3))
        size = np.where(size == 0, 1.0, size)
        mu = total / size
        filled = region + (1 - mask) * mu[None, :, None, None]
        scale = np.sqrt(size / (x.shape[0] * x.shape[2] * x.shape[3]))
        return _batch_norm_no_affine(filled, eps) * scale[None, :, None, None]

    return rn(x * label, label) + rn(x * (1 - label), 1 - label)


def nearest_resize_torch(mask, size):
    """`F.interpolate(mask, size, mode="nearest")` for NCHW."""
    out = mask
    for axis, target in zip((2, 3), size):
        source = out.shape[axis]
        index = np.minimum(
            np.floor(
                np.arange(target, dtype=np.float32)
                * np.float32(source / target)
            ),
            source - 1,
        ).astype(int)
        out = np.take(out, index, axis=axis)
    return out


def rn_b_official(x, mask, fg_gamma, fg_beta, bg_gamma, bg_beta, eps=1e-5):
    """`RN_B.forward`: nearest-resized mask, RN, region affine (both betas
    added everywhere, as the code does)."""
    mask = nearest_resize_torch(mask, x.shape[2:])
    rn_x = rn_binarylabel(x, mask, eps)
    c = (1, -1, 1, 1)
    fg = (rn_x * mask) * (1 + fg_gamma.reshape(c)) + fg_beta.reshape(c)
    bg = (rn_x * (1 - mask)) * (1 + bg_gamma.reshape(c)) + bg_beta.reshape(c)
    return fg + bg


def conv2d_same(x, kernel, bias=None):
    """Stride-1 'same' cross-correlation, NCHW input, OIHW kernel."""
    o, i, kh, kw = kernel.shape
    padded = np.pad(x, ((0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
    out = np.zeros((x.shape[0], o) + x.shape[2:])
    for dy in range(kh):
        for dx in range(kw):
            patch = padded[:, :, dy : dy + x.shape[2], dx : dx + x.shape[3]]
            out += np.einsum("nihw,oi->nohw", patch, kernel[:, :, dy, dx])
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    return out


def rn_l_official(
    x, attention_kernel, gamma_conv, beta_conv, threshold, eps=1e-5
):
    """`RN_L.forward` with `SelfAware_Affine`: kernels OIHW; `gamma_conv`
    and `beta_conv` are (kernel, bias) pairs."""
    pooled = np.concatenate(
        [x.mean(1, keepdims=True), x.max(1, keepdims=True)], axis=1
    )
    attention = 1.0 / (1.0 + np.exp(-conv2d_same(pooled, attention_kernel)))
    gamma = conv2d_same(attention, *gamma_conv)
    beta = conv2d_same(attention, *beta_conv)
    mask = (attention >= threshold).astype(np.float64)
    rn_x = rn_binarylabel(x, np.broadcast_to(mask, x.shape), eps)
    return rn_x * (1 + gamma) + beta, mask
