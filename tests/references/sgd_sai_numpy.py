"""NumPy reference for SGD-SaI, written from the official algorithm.

Source: the official code, https://github.com/AnonymousAlethiometer/SGD_SaI
(`sgd_sai/sgd_sai.py`, released on PyPI as `sgd-sai` 1.0.3, class
`SGD_sai`): at a variable's first gradient,
`gsnr = ||g|| / (std(g) + eps)` with the unbiased std (taken as 0 for a
one-element tensor) and frozen; the buffer starts at that gradient, then
`buf = m * buf + (1 - m) * g`; `w = w * (1 - lr * wd) - lr * gsnr * buf`.
`momentum=0` uses `buf = g`. A `None` gradient skips the variable (no
decay, no state), and its first real gradient sets its gSNR. Float64
throughout. The `variant` switches exist only to prove the tests
sensitive: each is a mistake a port can make, or another library's choice.

`official=False` is keras_batchopt's default, not the official code: a
variable whose first gradient has one element or a zero std gets gSNR 1.
"""

import numpy as np

CORRECT = "correct"
VARIANTS = (
    CORRECT,
    "zeros_buffer",  # pytorch_optimizer: the buffer starts at zeros
    "biased_std",  # NumPy/JAX/Keras default std (divides by n)
    "decay_times_gsnr",  # w * (1 - lr * gsnr * wd)
    "gsnr_every_step",  # gSNR recomputed from each gradient
    "undampened_momentum",  # buf = m * buf + g (torch.optim.SGD)
    "rank_one_norm_only",  # pytorch_optimizer: gsnr = ||g|| for rank <= 1
)


class SGDSaINumpy:
    """SGD-SaI over a list of float64 arrays; `step(grads, lr)` updates them.

    `decay_mask[i]` is True when variable i is decayed.
    """

    def __init__(
        self,
        params,
        momentum=0.9,
        epsilon=1e-8,
        weight_decay=0.0,
        decay_mask=None,
        variant=CORRECT,
        official=True,
    ):
        if variant not in VARIANTS:
            raise ValueError(variant)
        self.params = [np.array(p, dtype=np.float64) for p in params]
        self.buf = [None] * len(self.params)
        self.gsnr = [None] * len(self.params)
        self.momentum, self.eps, self.wd = momentum, epsilon, weight_decay
        self.decay_mask = list(decay_mask or [True] * len(self.params))
        self.variant = variant
        self.official = official

    def _gsnr(self, g):
        norm = np.sqrt(np.sum(g * g))
        if self.variant == "rank_one_norm_only" and g.ndim <= 1:
            return norm
        if g.size <= 1:
            std = 0.0
        else:
            ddof = 0 if self.variant == "biased_std" else 1
            std = np.std(g, ddof=ddof)
        if not self.official and std == 0.0:
            return 1.0
        return norm / (std + self.eps)

    def step(self, grads, lr):
        m = self.momentum
        for i, g in enumerate(grads):
            if g is None:
                continue
            g = np.asarray(g, dtype=np.float64)
            first = self.gsnr[i] is None
            if first or self.variant == "gsnr_every_step":
                self.gsnr[i] = self._gsnr(g)
            if m == 0:
                direction = g
            elif first and self.variant == "zeros_buffer":
                direction = (1 - m) * g
            elif first:
                direction = g
            elif self.variant == "undampened_momentum":
                direction = m * self.buf[i] + g
            else:
                direction = m * self.buf[i] + (1 - m) * g
            self.buf[i] = direction
            wd = self.wd if self.decay_mask[i] else 0.0
            decay_scale = lr * wd
            if self.variant == "decay_times_gsnr":
                decay_scale *= self.gsnr[i]
            p = self.params[i]
            self.params[i] = (
                p * (1 - decay_scale) - lr * self.gsnr[i] * direction
            )
        return self.params
