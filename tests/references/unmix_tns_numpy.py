"""NumPy (float64) port of the official UnMix-TNS module, in its NCHW
layout.

`BaseNormLayer.__init__`, `UnMixTNS2d.forward`, `UnMixTNS1d.forward` and
`replace_bn_layers` of `tta_experiments/unmixtns.py` in
https://github.com/devavratTomar/unmixtns at commit
8e12b9f03f394290eb89df58e17d949f082d5152 (Tomar et al., ICLR 2024). The
official noise is `torch.randn_like`; here it is an argument, so that the
port and the layer can start from the same components.

Official, per 2-D BN layer, K components of shape (K, C):

    running_means_mat = source_mean + sqrt(0.5 K / (K - 1))
                        * sqrt(source_var) * randn      (K = 1: no noise)
    running_vars_mat  = (1 - 0.5) * source_var          (K = 1: source_var)
    momentum          = 1 - (1 - bn.momentum) ** (bs / bs_max)

    forward(x):  inst_mean, inst_var (biased) over H, W      (B, C)
        probs = softmax_k(<normalize(inst_mean), normalize(means_k)> / 0.07)
        mean_mat = (1 - p) means_k + p inst_mean               (B, K, C)
        var_mat  = (1 - p) vars_k + p inst_var
        mean = mean_k mean_mat
        var  = mean_k var_mat + mean_k mean_mat**2 - mean**2
        means_k += momentum * mean_b(p (inst_mean - means_k))
        vars_k  += momentum * mean_b(p (inst_var - vars_k))
        return (x - mean) / sqrt(var + eps) * weight + bias

`UnMixTNS1d.forward` normalizes with the source statistics only.
`F.normalize` divides by max(norm, 1e-12).
"""

import numpy as np


def official_momentum(bn_momentum, batch_size, max_batch_size):
    """`replace_bn_layers`: the momentum corrected for the batch size."""
    return 1.0 - (1.0 - bn_momentum) ** (batch_size / max_batch_size)


def _normalize(v):
    norm = np.sqrt(np.sum(v * v, axis=1, keepdims=True))
    return v / np.maximum(norm, 1e-12)


class UnMixTNS:
    """The official module's state and forward, for NC... inputs
    (statistics over every axis after the channel axis)."""

    def __init__(self, source_mean, source_var, noise, momentum, eps):
        source_mean = np.asarray(source_mean, np.float64)
        source_var = np.asarray(source_var, np.float64)
        k = noise.shape[0]
        self.means = np.repeat(source_mean[None], k, axis=0)
        self.vars = np.repeat(source_var[None], k, axis=0)
        coeff = 0.5
        if k == 1:
            coeff = 0.0
        else:
            width = np.sqrt(coeff * k / (k - 1))
            self.means = self.means + width * np.sqrt(self.vars) * noise
        self.vars = (1 - coeff) * self.vars
        self.source_mean, self.source_var = source_mean, source_var
        self.momentum, self.eps = momentum, eps

    def forward(self, x, weight, bias, temperature=0.07):
        x = np.asarray(x, np.float64)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if x.ndim == 2:  # UnMixTNS1d
            y = (x - self.source_mean) / np.sqrt(self.source_var + self.eps)
            return y * weight + bias
        axes = tuple(range(2, x.ndim))
        inst_mean = x.mean(axes)
        inst_var = x.var(axes)
        sim = _normalize(inst_mean) @ _normalize(self.means).T
        logits = sim / temperature
        logits = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs = probs / probs.sum(axis=1, keepdims=True)
        p = probs[:, :, None]
        mean_mat = (1 - p) * self.means[None] + p * inst_mean[:, None]
        var_mat = (1 - p) * self.vars[None] + p * inst_var[:, None]
        mean = mean_mat.mean(1)
        var = var_mat.mean(1) + (mean_mat**2).mean(1) - mean**2
        diff_mean = inst_mean[:, None] - self.means[None]
        self.means = self.means + self.momentum * (p * diff_mean).mean(0)
        diff_var = inst_var[:, None] - self.vars[None]
        self.vars = self.vars + self.momentum * (p * diff_var).mean(0)
        b, c = mean.shape
        out_shape = (b, c) + (1,) * (x.ndim - 2)
        y = (x - mean.reshape(out_shape)) / np.sqrt(
            var.reshape(out_shape) + self.eps
        )
        return y * np.reshape(weight, shape) + np.reshape(bias, shape)
