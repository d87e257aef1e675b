"""NumPy reference for LARS, written from the SimCLR reference optimizer.

Source: `lars_optimizer.py` (and its copy `tf2/lars_optimizer.py`), classic
momentum branch, of https://github.com/google-research/simclr at commit
383d4143fd8cf7879ae10f1046a9baeb753ff438 (You, Gitman and Ginsburg, arXiv
1708.03888):
`g += wd * w` (when decayed), `trust = eta * ||w|| / ||g||` (1 when either
norm is 0), `v = m * v + lr * trust * g`, `w -= v` (Nesterov:
`w -= m * v + lr * trust * g`). The paper's sum-of-norms denominator
`||g|| + wd * ||w||` (timm) and LARC's clip `min(trust / lr, 1)` (NVIDIA
apex) are options. Float64 throughout. The `variant` switches exist only to
prove the tests sensitive: each is a mistake a port can make, or another
library's choice.
"""

import numpy as np

CORRECT = "correct"
VARIANTS = (
    CORRECT,
    "lr_outside_buffer",  # PyTorch-style momentum (timm, pytorch_optimizer)
    "swap_trust_mode",  # norm of the sum <-> sum of the norms
    "trust_before_decay",  # pytorch_optimizer: trust from ||g|| alone
    "swap_nesterov",
    "no_zero_guard",  # trust = eta * ||w|| / ||g|| even when ||w|| == 0
    "adapt_everything",  # optax.lars: no rank-based exclusion
)


class LarsNumpy:
    """LARS over a list of float64 arrays; `step(grads, lr)` updates them.

    `decay_mask[i]` is True when variable i is decayed; `adapt_mask[i]` is
    True when it takes the trust ratio (default: rank >= 2 variables).
    """

    def __init__(
        self,
        params,
        momentum=0.9,
        nesterov=False,
        weight_decay=0.0,
        trust_coefficient=1e-3,
        epsilon=0.0,
        trust_mode="norm_of_sum",
        decay_mask=None,
        adapt_mask=None,
        larc=False,
        variant=CORRECT,
    ):
        if variant not in VARIANTS:
            raise ValueError(variant)
        self.params = [np.array(p, dtype=np.float64) for p in params]
        self.buf = [np.zeros_like(p) for p in self.params]
        self.momentum = momentum
        self.nesterov = nesterov != (variant == "swap_nesterov")
        self.wd, self.eta, self.eps = weight_decay, trust_coefficient, epsilon
        sum_of_norms = trust_mode == "sum_of_norms"
        self.sum_of_norms = sum_of_norms != (variant == "swap_trust_mode")
        self.decay_mask = list(decay_mask or [True] * len(self.params))
        if adapt_mask is None:
            adapt_mask = [p.ndim >= 2 for p in self.params]
        if variant == "adapt_everything":
            adapt_mask = [True] * len(self.params)
        self.adapt_mask = list(adapt_mask)
        self.larc = larc
        self.variant = variant

    def _trust(self, p, g, d, wd, lr):
        w_norm = np.linalg.norm(p)
        if self.variant == "trust_before_decay":
            u_norm = denominator = np.linalg.norm(g)
        elif self.sum_of_norms:
            u_norm = np.linalg.norm(g)
            denominator = u_norm + wd * w_norm
        else:
            u_norm = denominator = np.linalg.norm(d)
        if self.variant == "no_zero_guard" or (w_norm > 0 and u_norm > 0):
            trust = self.eta * w_norm / (denominator + self.eps)
        else:
            trust = 1.0
        if self.larc:
            trust = min(trust / lr, 1.0)
        return trust

    def step(self, grads, lr):
        for i, g in enumerate(grads):
            g = np.asarray(g, dtype=np.float64)
            p = self.params[i]
            wd = self.wd if self.decay_mask[i] else 0.0
            d = g + wd * p
            trust = self._trust(p, g, d, wd, lr) if self.adapt_mask[i] else 1.0
            m = self.momentum
            if self.variant == "lr_outside_buffer":
                self.buf[i] = m * self.buf[i] + trust * d
                direction = trust * d + m * self.buf[i]
                update = lr * (direction if self.nesterov else self.buf[i])
            else:
                step = lr * trust * d
                self.buf[i] = m * self.buf[i] + step
                update = (
                    step + m * self.buf[i] if self.nesterov else self.buf[i]
                )
            self.params[i] = p - update
        return self.params
