"""NumPy reference for ConAdv (Liu, Chen, Cheng, Hsieh and You, ICLR 2022,
arXiv 2106.00221; the ConAdv algorithm with staleness tau = 1).

No official code was found; this is written from the paper's algorithm:
at step t, `x_adv = x_t + eps * sign(grad_x L(theta_{t-1}; x_t, y_t))`
with `theta_{-1} = theta_0`, then
`theta_{t+1} = theta_t - lr * grad [wc * L(theta_t; x_t) + wa * L(theta_t;
x_adv)]` (plain SGD here). The model is softmax regression
`logits = x W + b` with the mean cross-entropy, gradients by hand. Float64
throughout. `variant` switches exist only to prove the tests sensitive.
"""

import numpy as np

VARIANTS = (
    "correct",
    "fresh_weights",  # x_adv from theta_t: ordinary (sequential) FGSM
    "loss_mean_of_both",  # (L + L_adv) / 2 instead of L + L_adv
    "no_sign",  # x + eps * grad instead of its sign
)


def _probabilities(x, w, b):
    z = x @ w + b
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def gradients(x, y, w, b):
    """`(dL/dx, dL/dW, dL/db)` of the mean cross-entropy."""
    n = x.shape[0]
    delta = _probabilities(x, w, b)
    delta[np.arange(n), y] -= 1.0
    delta /= n
    return delta @ w.T, x.T @ delta, delta.sum(0)


def train(batches, w, b, lr, epsilon, wc=1.0, wa=1.0, variant="correct"):
    """ConAdv with SGD over `batches` [(x, y), ...]; returns the
    trajectory [(W, b) after each step]."""
    stale = (w.copy(), b.copy())
    out = []
    for x, y in batches:
        source = (w, b) if variant == "fresh_weights" else stale
        gx, _, _ = gradients(x, y, *source)
        step = gx if variant == "no_sign" else np.sign(gx)
        x_adv = x + epsilon * step
        _, gw_clean, gb_clean = gradients(x, y, w, b)
        _, gw_adv, gb_adv = gradients(x_adv, y, w, b)
        scale = 0.5 if variant == "loss_mean_of_both" else 1.0
        gw = scale * (wc * gw_clean + wa * gw_adv)
        gb = scale * (wc * gb_clean + wa * gb_adv)
        stale = (w.copy(), b.copy())
        w, b = w - lr * gw, b - lr * gb
        out.append((w.copy(), b.copy()))
    return out
