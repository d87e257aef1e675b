"""NumPy reference for SinkGD, written from the paper's SR-Sinkhorn.

Source: Scetbon, Ma, Gong and Meeds, "Gradient Multi-Normalization for
Stateless and Scalable LLM Training", arXiv 2502.06742, Algorithms 3 and 4
(SR-Sinkhorn; no official code was published): for a matrix
`W` (m x n, rows = output units of `y = W x`) and gradient `G`, `X = G`,
then `num_iterations` times: every row to l2 norm sqrt(n), then every column
to l2 norm sqrt(m); `W -= lr * X`. Norms are floored at `sinkhorn_epsilon`
(the ports' clamp). A Keras kernel `(..., in, out)` is the transpose of
`W`: it is reshaped to `(fan_in, out)` and transposed here, in the paper's
own terms, so that the reference does not share the implementation's axis
bookkeeping. Variables of rank <= 1 (and any in `adam_mask`) take AdamW
(PyTorch form: bias-corrected moments, `eps` after the square root,
decoupled decay) at `lr * adam_lr_ratio`. Float64 throughout. The
`variant` switches exist only to prove the tests sensitive: each is a
mistake a port can make, or another port's choice.
"""

import numpy as np

CORRECT = "correct"
VARIANTS = (
    CORRECT,
    "columns_first",  # the column step before the row step
    "unit_norms",  # rows and columns to norm 1 (no sqrt(n), sqrt(m))
    "unit_frobenius",  # the port that divides X_L by sqrt(m n)
    "fold_trailing_axes",  # PyTorch's view(shape[0], -1) on Keras's layout
    "batch_leading_axes",  # conv kernel as a batch of (in, out) matrices
    "epsilon_added",  # norm + eps instead of max(norm, eps)
    "muon_rank_rule",  # rank != 2 -> Adam (a conv kernel leaves SinkGD)
    "no_bias_correction",  # Adam fallback without 1 - beta**t
    "coupled_decay",  # L2: decay added to the gradient
    "decay_at_main_lr",  # Muon: Adam-routed decay scaled by the main lr
)


def _norm(x, axis, eps, added):
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return norm + eps if added else np.maximum(norm, eps)


def sr_sinkhorn(W, num_iterations, eps, variant=CORRECT):
    """The paper's SR-Sinkhorn on a matrix W (m x n), rows first."""
    m, n = W.shape
    row_target, column_target = np.sqrt(n), np.sqrt(m)
    if variant == "unit_norms":
        row_target = column_target = 1.0
    added = variant == "epsilon_added"

    def rows(X):
        return row_target * X / _norm(X, 1, eps, added)

    def columns(X):
        return column_target * X / _norm(X, 0, eps, added)

    order = (columns, rows) if variant == "columns_first" else (rows, columns)
    X = np.array(W, dtype=np.float64)
    for _ in range(num_iterations):
        for normalize in order:
            X = normalize(X)
    if variant == "unit_frobenius":
        X = X / np.sqrt(m * n)
    return X


def sinkgd_direction(g, num_iterations, eps, variant=CORRECT):
    """The SinkGD step of a Keras-layout gradient `g` (rank >= 2)."""
    shape = g.shape
    if variant == "fold_trailing_axes":
        W = g.reshape(shape[0], -1)
        return sr_sinkhorn(W, num_iterations, eps, CORRECT).reshape(shape)
    if variant == "batch_leading_axes" and g.ndim > 2:
        out = np.empty_like(g)
        for index in np.ndindex(*shape[:-2]):
            W = g[index].T
            out[index] = sr_sinkhorn(W, num_iterations, eps, CORRECT).T
        return out
    W = g.reshape(-1, shape[-1]).T  # (out, fan_in): the paper's W
    X = sr_sinkhorn(W, num_iterations, eps, variant)
    return X.T.reshape(shape)


class SinkGDNumpy:
    """SinkGD over a list of float64 arrays; `step(grads, lr)` updates them.

    `adam_mask[i]` is True when variable i takes AdamW (default: rank <= 1);
    `decay_mask[i]` is True when it is decayed.
    """

    def __init__(
        self,
        params,
        num_iterations=5,
        sinkhorn_epsilon=1e-8,
        output_scale="rms",
        weight_decay=0.0,
        adam_beta_1=0.9,
        adam_beta_2=0.999,
        epsilon=1e-7,
        adam_lr_ratio=1.0,
        adam_mask=None,
        decay_mask=None,
        variant=CORRECT,
    ):
        if variant not in VARIANTS:
            raise ValueError(variant)
        self.params = [np.array(p, dtype=np.float64) for p in params]
        if adam_mask is None:
            if variant == "muon_rank_rule":
                adam_mask = [p.ndim != 2 for p in self.params]
            else:
                adam_mask = [p.ndim <= 1 for p in self.params]
        self.adam_mask = list(adam_mask)
        self.decay_mask = list(decay_mask or [True] * len(self.params))
        self.m = [np.zeros_like(p) for p in self.params]
        self.v = [np.zeros_like(p) for p in self.params]
        self.t = 0
        self.num_iterations = num_iterations
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_variant = variant
        if output_scale == "unit_frobenius":
            self.sinkhorn_variant = "unit_frobenius"
        self.wd = weight_decay
        self.b1, self.b2, self.eps = adam_beta_1, adam_beta_2, epsilon
        self.adam_lr_ratio = adam_lr_ratio
        self.variant = variant

    def _adam(self, i, g):
        self.m[i] = self.b1 * self.m[i] + (1 - self.b1) * g
        self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * g * g
        m_hat, v_hat = self.m[i], self.v[i]
        if self.variant != "no_bias_correction":
            m_hat = m_hat / (1 - self.b1**self.t)
            v_hat = v_hat / (1 - self.b2**self.t)
        return m_hat / (np.sqrt(v_hat) + self.eps)

    def step(self, grads, lr):
        self.t += 1
        for i, g in enumerate(grads):
            g = np.asarray(g, dtype=np.float64)
            p = self.params[i]
            wd = self.wd if self.decay_mask[i] else 0.0
            if self.variant == "coupled_decay":
                g = g + wd * p
            if self.adam_mask[i]:
                group_lr = lr * self.adam_lr_ratio
                direction = self._adam(i, g)
            else:
                group_lr = lr
                direction = sinkgd_direction(
                    g,
                    self.num_iterations,
                    self.sinkhorn_epsilon,
                    self.sinkhorn_variant,
                )
            decay_lr = lr if self.variant == "decay_at_main_lr" else group_lr
            if self.variant == "coupled_decay":
                wd = 0.0
            self.params[i] = p - group_lr * direction - decay_lr * wd * p
        return self.params
