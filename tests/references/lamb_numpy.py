"""NumPy reference for LAMB, ported from the TensorFlow Addons test oracle.

Source: https://github.com/tensorflow/addons (archived) at commit
d208d752e98c310280938efa939117bf635a60a8,
`tensorflow_addons/optimizers/tests/lamb_test.py::lamb_update_numpy` and
`tensorflow_addons/optimizers/lamb.py` (You et al., arXiv 1904.00962): Adam
moments with bias correction, `update = m_hat / (sqrt(v_hat) + eps) + wd *
w`, ratio `||w|| / ||update||` with 1.0 when either norm is 0, `w -= lr *
ratio * update`; `exclude_from_layer_adaptation` defaults to the decay
exclusions (`lamb.py`). Float64 throughout. The `variant` switches exist
only to prove the tests sensitive: each is a mistake a port can make, or
another library's choice.
"""

import numpy as np

CORRECT = "correct"
VARIANTS = (
    CORRECT,
    "eps_inside_sqrt",  # sqrt(v_hat + eps)
    "decay_outside_trust",  # keras.optimizers.Lamb: decoupled pre-step decay
    "no_bias_correction",  # paper v3 / pytorch_optimizer
    "no_zero_guard",  # ratio = ||w|| / ||u|| even when ||w|| == 0
    "adapt_everything",  # optax.lamb: exclusions apply to decay only
)


class LambNumpy:
    """LAMB over a list of float64 arrays; `step(grads, lr)` updates them.

    `decay_mask[i]` is True when variable i is decayed; `adapt_mask[i]` is
    True when it takes the trust ratio (default: `decay_mask`, as TFA).
    """

    def __init__(
        self,
        params,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        weight_decay=0.0,
        decay_mask=None,
        adapt_mask=None,
        max_trust_ratio=None,
        bias_correction=True,
        variant=CORRECT,
    ):
        if variant not in VARIANTS:
            raise ValueError(variant)
        self.params = [np.array(p, dtype=np.float64) for p in params]
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.b1, self.b2, self.eps, self.wd = (
            beta_1,
            beta_2,
            epsilon,
            weight_decay,
        )
        self.decay_mask = list(decay_mask or [True] * len(self.params))
        self.adapt_mask = list(
            self.decay_mask if adapt_mask is None else adapt_mask
        )
        if variant == "adapt_everything":
            self.adapt_mask = [True] * len(self.params)
        self.max_trust_ratio = max_trust_ratio
        self.bias_correction = bias_correction and (
            variant != "no_bias_correction"
        )
        self.variant = variant
        self.t = 0

    def step(self, grads, lr):
        self.t += 1
        t, b1, b2, eps = self.t, self.b1, self.b2, self.eps
        for i, g in enumerate(grads):
            g = np.asarray(g, dtype=np.float64)
            p = self.params[i]
            wd = self.wd if self.decay_mask[i] else 0.0
            if self.variant == "decay_outside_trust":
                p = p - lr * wd * p
                wd = 0.0
            self.m[i] = b1 * self.m[i] + (1 - b1) * g
            self.v[i] = b2 * self.v[i] + (1 - b2) * g * g
            m_hat, v_hat = self.m[i], self.v[i]
            if self.bias_correction:
                m_hat = m_hat / (1 - b1**t)
                v_hat = v_hat / (1 - b2**t)
            if self.variant == "eps_inside_sqrt":
                update = m_hat / np.sqrt(v_hat + eps)
            else:
                update = m_hat / (np.sqrt(v_hat) + eps)
            update = update + wd * p
            ratio = 1.0
            if self.adapt_mask[i]:
                w_norm = np.linalg.norm(p)
                u_norm = np.linalg.norm(update)
                if self.variant == "no_zero_guard":
                    ratio = w_norm / u_norm
                elif w_norm > 0 and u_norm > 0:
                    ratio = w_norm / u_norm
                if self.max_trust_ratio is not None:
                    ratio = min(ratio, self.max_trust_ratio)
            self.params[i] = p - lr * ratio * update
        return self.params
