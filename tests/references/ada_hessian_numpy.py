"""NumPy reference for AdaHessian, written from the official code.

Source: the official code, https://github.com/amirgholami/adahessian at
commit 85ebc00ce873c8497a64ca80bbfa5d996109efea (Yao et al., arXiv
2006.00719): `image_classification/optim_adahessian.py`
(`D = |Hz|`, rank-4 kernels averaged over their spatial axes, moving
averages of `g` and `D**2`, `denom = (sqrt(v) / sqrt(bc2))**k + eps`,
`w -= lr * (m / bc1 / denom + wd * w)`) and `instruction/adahessian.py`
(dense kernels averaged over their input axis, contiguous blocks), with
the axes mapped to Keras's layouts (kernels `(*spatial, in, out)`).
Float64 throughout. The Hessian-vector products are inputs:
`step(grads, hvps, lr)`.

`variant` switches exist only to prove the tests sensitive: each is a
mistake a port can make, or another library's choice.
"""

import numpy as np

CORRECT = "correct"
VARIANTS = (
    CORRECT,
    "signed_estimate",  # z * Hz without the absolute value (timm)
    "no_spatial_average",  # pytorch_optimizer: no averaging of conv kernels
    "torch_spatial_axes",  # averaging the last two axes, PyTorch's layout
    "eps_inside_power",  # (sqrt(v / bc2) + eps) ** k
    "no_bias_correction",
    "coupled_decay",  # weight decay added to the gradient (Adam-style L2)
    "step_count_bias_correction",  # bc2 from steps, not refreshes
)


def average(d, mode, variant=CORRECT):
    """`d` averaged over its blocks for `mode` (see hessian_averaging)."""
    rank = d.ndim
    if isinstance(mode, int):
        if mode == 1 or rank <= 1:
            return d
        blocks = d.reshape(-1, mode)
        means = blocks.mean(axis=1, keepdims=True)
        return np.broadcast_to(means, blocks.shape).reshape(d.shape)
    if mode == "none" or rank <= 1:
        return d
    if rank == 2:
        if mode == "spatial_and_input":
            return np.broadcast_to(d.mean(axis=0, keepdims=True), d.shape)
        return d
    if variant == "no_spatial_average":
        return d
    axes = tuple(range(rank - 2))
    if variant == "torch_spatial_axes":
        axes = (rank - 2, rank - 1)
    return np.broadcast_to(d.mean(axis=axes, keepdims=True), d.shape)


class AdaHessianNumpy:
    """AdaHessian over a list of float64 arrays.

    `decay_mask[i]` is True when variable i is decayed.
    """

    def __init__(
        self,
        params,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-4,
        weight_decay=0.0,
        hessian_power=1.0,
        hessian_averaging="spatial",
        hessian_update_interval=1,
        decay_mask=None,
        variant=CORRECT,
    ):
        if variant not in VARIANTS:
            raise ValueError(variant)
        self.params = [np.array(p, dtype=np.float64) for p in params]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.b1, self.b2, self.eps = beta_1, beta_2, epsilon
        self.wd, self.k = weight_decay, hessian_power
        self.mode = hessian_averaging
        self.interval = hessian_update_interval
        self.decay_mask = list(decay_mask or [True] * len(self.params))
        self.variant = variant
        self.t = 0

    def step(self, grads, hvps, lr):
        refresh = self.t % self.interval == 0
        refreshes = self.t // self.interval + 1
        self.t += 1
        for i, (g, hz) in enumerate(zip(grads, hvps)):
            g = np.asarray(g, np.float64)
            hz = np.asarray(hz, np.float64)
            p = self.params[i]
            wd = self.wd if self.decay_mask[i] else 0.0
            if self.variant == "coupled_decay":
                g = g + wd * p
                wd = 0.0
            d = hz if self.variant == "signed_estimate" else np.abs(hz)
            d = average(d, self.mode, self.variant)
            self.m[i] = self.b1 * self.m[i] + (1 - self.b1) * g
            if refresh:
                self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * d * d
            bc1 = 1 - self.b1**self.t
            n = (
                self.t
                if self.variant == "step_count_bias_correction"
                else (refreshes)
            )
            bc2 = 1 - self.b2**n
            if self.variant == "no_bias_correction":
                bc1 = bc2 = 1.0
            if self.variant == "eps_inside_power":
                denom = (np.sqrt(self.v[i] / bc2) + self.eps) ** self.k
            else:
                denom = (np.sqrt(self.v[i]) / np.sqrt(bc2)) ** self.k
                denom = denom + self.eps
            self.params[i] = p - lr * (self.m[i] / bc1 / denom + wd * p)
