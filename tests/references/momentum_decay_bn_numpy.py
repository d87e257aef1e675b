"""NumPy (float64) port of DUA's adaptation loop, in the NCHW layout.

Official code: `dua` in `methods/dua.py` of https://github.com/jmiemirza/DUA
at commit 5a2197154405ce947006558180f430d64b99c626 (Mirza et al., CVPR
2022). Per test sample, with `mom_pre = 0.1` at the start of each task:

    mom_new = mom_pre * decay_factor          # decay BEFORE the first use
    for every BatchNorm m: m.train(); m.momentum = mom_new + min_mom
    mom_pre = mom_new
    _ = net(inputs)                           # BN in train mode
    net.eval()                                # then predict

`decay_factor` 0.94 and `min_mom` 0.005 are the defaults of `main.py`.
PyTorch's BatchNorm in train mode normalizes with the batch mean and the
BIASED batch variance, and updates `running = (1 - momentum) * running +
momentum * batch` with the UNBIASED variance (`n / (n - 1)`, n the values
per channel: batch x spatial positions). `momentum` weighs the new batch.
"""

import numpy as np


def _channel(v, ndim):
    return np.reshape(v, (1, -1) + (1,) * (ndim - 2))


def _axes(ndim):
    return (0,) + tuple(range(2, ndim))


def batch_norm_eval(x, running_mean, running_var, gamma, beta, eps):
    """PyTorch's BatchNorm in eval mode."""
    x = np.asarray(x, np.float64)
    y = (x - _channel(running_mean, x.ndim)) / np.sqrt(
        _channel(running_var, x.ndim) + eps
    )
    return y * _channel(gamma, x.ndim) + _channel(beta, x.ndim)


def batch_norm_train(x, running_mean, running_var, gamma, beta, eps, momentum):
    """PyTorch's BatchNorm in train mode: the output and the updated
    running mean and variance."""
    x = np.asarray(x, np.float64)
    axes = _axes(x.ndim)
    n = x.size // x.shape[1]
    mean = x.mean(axes)
    var = x.var(axes)
    y = batch_norm_eval(x, mean, var, gamma, beta, eps)
    running_mean = (1 - momentum) * running_mean + momentum * mean
    running_var = (1 - momentum) * running_var + momentum * var * n / (n - 1)
    return y, running_mean, running_var


class DUA:
    """The official loop over a network of BatchNorm layers `bns` (dicts
    with gamma, beta, running_mean, running_var) and `between`, the
    functions applied after each BatchNorm but the last (ReLU, a 1x1
    convolution...)."""

    def __init__(self, bns, between, eps, decay_factor=0.94, min_mom=0.005):
        self.bns = [
            {k: np.array(v, np.float64) for k, v in b.items()} for b in bns
        ]
        self.between = list(between)
        self.eps = eps
        self.decay_factor = decay_factor
        self.min_mom = min_mom
        self.mom_pre = 0.1

    def adapt(self, x):
        """One adaptation pass; returns the (train-mode) output."""
        mom_new = self.mom_pre * self.decay_factor
        momentum = mom_new + self.min_mom
        self.mom_pre = mom_new
        for i, bn in enumerate(self.bns):
            x, bn["running_mean"], bn["running_var"] = batch_norm_train(
                x,
                bn["running_mean"],
                bn["running_var"],
                bn["gamma"],
                bn["beta"],
                self.eps,
                momentum,
            )
            if i < len(self.between):
                x = self.between[i](x)
        return x

    def predict(self, x):
        """The eval-mode output with the running statistics."""
        for i, bn in enumerate(self.bns):
            x = batch_norm_eval(
                x,
                bn["running_mean"],
                bn["running_var"],
                bn["gamma"],
                bn["beta"],
                self.eps,
            )
            if i < len(self.between):
                x = self.between[i](x)
        return x
