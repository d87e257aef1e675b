"""NumPy reference for Adan, written from the official code's update rule.

Source: `adan.py` of the official code, https://github.com/sail-sg/Adan at
commit 2c65beaf400775753b155da4082c3819fea689b9 (Xie et al., arXiv
2208.06677; the code's Adam-style betas, zero initial moments, bias
correction and epsilon outside the square root, not the paper's
Algorithm 1). Float64 throughout, so it is an oracle for float32
implementations. The `variant` switches exist only to
prove the tests sensitive: each one is a mistake a port can make (see
tests/optimizers/test_adan.py::test_oracle_detects_each_perturbation).
"""

import math

import numpy as np

CORRECT = "correct"
VARIANTS = (
    CORRECT,
    "optax_diff_coefficient",  # 1 - b2 instead of b2 (optax 0.2.8)
    "eps_inside_sqrt",  # the paper's placement
    "no_bias_correction",  # the paper's Algorithm 1
    "first_diff_not_zero",  # prev_g = 0 at step 1
    "unclipped_prev_grad",  # store the raw gradient as prev_g
    "swap_prox",  # proximal <-> decoupled decay
)


class AdanNumpy:
    """Adan over a list of float64 arrays; `step(grads, lr)` updates them."""

    def __init__(
        self,
        params,
        beta_1=0.98,
        beta_2=0.92,
        beta_3=0.99,
        epsilon=1e-8,
        weight_decay=0.0,
        no_prox=False,
        max_grad_norm=0.0,
        restart_every=None,
        decay_mask=None,
        variant=CORRECT,
    ):
        if variant not in VARIANTS:
            raise ValueError(variant)
        self.params = [np.array(p, dtype=np.float64) for p in params]
        self.b1, self.b2, self.b3 = beta_1, beta_2, beta_3
        self.eps = epsilon
        self.wd = weight_decay
        self.no_prox = no_prox
        self.max_grad_norm = max_grad_norm
        self.restart_every = restart_every
        self.decay_mask = decay_mask or [True] * len(self.params)
        self.variant = variant
        self.t = 0
        self.restart()
        self.prev = [np.zeros_like(p) for p in self.params]

    def restart(self):
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.n = [np.zeros_like(p) for p in self.params]
        self.t = 0

    def step(self, grads, lr):
        if self.restart_every and self.t == self.restart_every:
            self.restart()
        self.t += 1
        t = self.t
        grads = [np.asarray(g, dtype=np.float64) for g in grads]
        clip = 1.0
        if self.max_grad_norm > 0:
            norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
            clip = min(1.0, self.max_grad_norm / (norm + self.eps))
        b1, b2, b3, eps = self.b1, self.b2, self.b3, self.eps
        if self.variant == "no_bias_correction":
            bc1 = bc2 = bc3 = 1.0
        else:
            bc1, bc2, bc3 = 1 - b1**t, 1 - b2**t, 1 - b3**t
        diff_coef = 1 - b2 if self.variant == "optax_diff_coefficient" else b2
        no_prox = self.no_prox != (self.variant == "swap_prox")
        for i, raw in enumerate(grads):
            g = raw * clip
            if t == 1 and self.variant != "first_diff_not_zero":
                self.prev[i] = g.copy()
            d = g - self.prev[i]
            self.m[i] = b1 * self.m[i] + (1 - b1) * g
            self.v[i] = b2 * self.v[i] + (1 - b2) * d
            u = g + diff_coef * d
            self.n[i] = b3 * self.n[i] + (1 - b3) * u * u
            if self.variant == "eps_inside_sqrt":
                denom = np.sqrt(self.n[i] / bc3 + eps)
            else:
                denom = np.sqrt(self.n[i]) / math.sqrt(bc3) + eps
            update = (lr / bc1) * self.m[i] + (lr * diff_coef / bc2) * self.v[i]
            p = self.params[i]
            wd = self.wd if self.decay_mask[i] else 0.0
            if no_prox:
                p = p * (1 - lr * wd) - update / denom
            else:
                p = (p - update / denom) / (1 + lr * wd)
            self.params[i] = p
            self.prev[i] = (
                raw.copy() if self.variant == "unclipped_prev_grad" else g
            )
        return self.params
