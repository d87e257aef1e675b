"""NumPy references for AdAdaGrad's batch-size tests (float64).

Written from AdAdaGrad's `tests.py` (per-variable inner products and
projections, variances with correction 1, summed) and from the papers'
formulas over the concatenated gradient ("global")."""

import math

import numpy as np


def softmax_regression_per_sample_grads(w, b, x, y):
    """Per-sample gradients of cross-entropy(softmax(x w + b), y)."""
    logits = x @ w + b
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0  # dL/dlogits
    return [np.einsum("bi,bj->bij", x, p), p]


def statistics(grads, scope="per_variable"):
    n = grads[0].shape[0]
    flat = [g.reshape(n, -1).astype("float64") for g in grads]
    means = [f.mean(axis=0) for f in flat]
    sq_norm = sum(float(m @ m) for m in means)
    variance_l1 = sum(float(f.var(axis=0, ddof=1).sum()) for f in flat)
    if scope == "per_variable":
        ip_var = 0.0
        orth_var = 0.0
        for f, m in zip(flat, means):
            ip = f @ m
            ip_var += float(np.var(ip, ddof=1))
            ortho = f - np.outer(ip, m) / float(m @ m)
            orth_var += float(ortho.var(axis=0, ddof=1).sum())
    else:
        g = np.concatenate(flat, axis=1)
        m = g.mean(axis=0)
        ip = g @ m
        ip_var = float(np.var(ip, ddof=1))
        ortho = g - np.outer(ip, m) / float(m @ m)
        orth_var = float(ortho.var(axis=0, ddof=1).sum())
    return dict(
        sq_norm=sq_norm,
        variance_l1=variance_l1,
        inner_product_var=ip_var,
        orthogonal_var=orth_var,
    )


def norm_test(s, eta):
    return math.ceil(s["variance_l1"] / (eta**2 * s["sq_norm"]))


def inner_product_test(s, theta):
    return math.ceil(s["inner_product_var"] / (theta**2 * s["sq_norm"] ** 2))


def augmented_test(s, theta, nu):
    orth = math.ceil(s["orthogonal_var"] / (nu**2 * s["sq_norm"]))
    return max(inner_product_test(s, theta), orth)


# Plausible mistakes in the statistics; each must move at least one
# statistic far beyond the test tolerance.
def _biased(grads, scope="per_variable"):
    n = grads[0].shape[0]
    s = statistics(grads, scope)
    return {k: v * (n - 1) / n if k != "sq_norm" else v for k, v in s.items()}


def _other_scope(grads, scope="per_variable"):
    return statistics(
        grads, "global" if scope == "per_variable" else "per_variable"
    )


def _projection_by_norm(grads, scope="per_variable"):
    """Projecting with <g, m> / ||m|| instead of / ||m||^2."""
    n = grads[0].shape[0]
    s = statistics(grads, scope)
    flat = np.concatenate([g.reshape(n, -1) for g in grads], axis=1)
    m = flat.mean(axis=0)
    ip = flat @ m
    ortho = flat - np.outer(ip, m) / np.sqrt(m @ m)
    s["orthogonal_var"] = float(ortho.var(axis=0, ddof=1).sum())
    return s


STATISTICS_VARIANTS = {
    "biased_variance": _biased,
    "other_scope": _other_scope,
    "projection_by_norm": _projection_by_norm,
}
