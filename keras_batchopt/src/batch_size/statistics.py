"""Gradient-noise statistics from per-sample gradients, and the three
batch-size tests of AdAdaGrad (Lau, Liu and Kolar), written once in
`keras.ops`.

For per-sample gradients ``g_i`` (``i = 1..b``) of all trainable variables,
``m = mean_i g_i`` the batch gradient, and unbiased (``b - 1``) variances:

```
sq_norm           = ||m||^2
variance_l1       = sum over coordinates of Var_i(g_i)
inner_product_var = Var_i(<g_i, m>)
orthogonal_var    = sum over coordinates of
                    Var_i(g_i - <g_i, m> / ||m||^2 * m)
```

With ``scope="per_variable"`` (AdAdaGrad's official code) the inner
products and projections are taken per variable and the variances summed;
with ``scope="global"`` (the papers' formulas) they are taken over the
concatenation of all variables.
"""

import math

from keras import ops

SCOPES = ("per_variable", "global")


def _flat(gradients):
    size = ops.shape(gradients[0])[0]
    return size, [
        ops.reshape(ops.cast(g, "float32"), (size, -1)) for g in gradients
    ]


def _unbiased_sum_sq(centered, size):
    return ops.sum(ops.square(centered)) / (ops.cast(size, "float32") - 1.0)


def _safe_divide(numerator, denominator):
    safe = ops.where(denominator > 0, denominator, 1.0)
    return ops.where(denominator > 0, numerator / safe, 0.0)


def gradient_statistics(per_sample_gradients, scope="per_variable"):
    """The four statistics above as float32 scalars (a dict).

    Args:
        per_sample_gradients: a list of tensors, one per variable, each of
            shape ``(b, *variable.shape)`` with ``b >= 2``.
        scope: ``"per_variable"`` or ``"global"``.
    """
    size, flat = _flat(per_sample_gradients)
    means = [ops.mean(f, axis=0) for f in flat]
    sq_norms = [ops.sum(ops.square(m)) for m in means]
    sq_norm = sum(sq_norms)
    centered = [f - m for f, m in zip(flat, means)]
    variance_l1 = sum(_unbiased_sum_sq(c, size) for c in centered)
    products = [ops.matmul(f, m) for f, m in zip(flat, means)]  # (b,) each
    if scope == "per_variable":
        inner_product_var = sum(
            _unbiased_sum_sq(p - ops.mean(p), size) for p in products
        )
        orthogonal_var = 0.0
        for c, m, p, s in zip(centered, means, products, sq_norms):
            coefficient = _safe_divide(p, s)
            coefficient = coefficient - ops.mean(coefficient)
            orthogonal_var += _unbiased_sum_sq(
                c - coefficient[:, None] * m[None, :], size
            )
    else:
        product = sum(products)
        inner_product_var = _unbiased_sum_sq(product - ops.mean(product), size)
        coefficient = _safe_divide(product, sq_norm)
        coefficient = coefficient - ops.mean(coefficient)
        orthogonal_var = sum(
            _unbiased_sum_sq(c - coefficient[:, None] * m[None, :], size)
            for c, m in zip(centered, means)
        )
    return {
        "sq_norm": sq_norm,
        "variance_l1": variance_l1,
        "inner_product_var": inner_product_var,
        "orthogonal_var": orthogonal_var,
    }


def _ceil(value):
    if not math.isfinite(value):
        return None
    return max(int(math.ceil(value - 1e-9)), 1)


def norm_test(statistics, eta=0.1):
    """Byrd et al.'s norm test: the smallest batch with
    ``variance_l1 / b <= eta^2 ||m||^2``, or None when ``||m|| = 0``."""
    sq_norm = float(statistics["sq_norm"])
    if sq_norm <= 0:
        return None
    return _ceil(float(statistics["variance_l1"]) / (eta**2 * sq_norm))


def inner_product_test(statistics, theta=0.1):
    """Bollapragada et al.'s inner-product test: the smallest batch with
    ``Var(<g_i, m>) / b <= theta^2 ||m||^4``, or None when ``||m|| = 0``."""
    sq_norm = float(statistics["sq_norm"])
    if sq_norm <= 0:
        return None
    return _ceil(
        float(statistics["inner_product_var"]) / (theta**2 * sq_norm**2)
    )


def orthogonality_test(statistics, nu=0.1):
    """The orthogonality test: the smallest batch with
    ``orthogonal_var / b <= nu^2 ||m||^2``, or None when ``||m|| = 0``."""
    sq_norm = float(statistics["sq_norm"])
    if sq_norm <= 0:
        return None
    return _ceil(float(statistics["orthogonal_var"]) / (nu**2 * sq_norm))


def augmented_inner_product_test(statistics, theta=0.1, nu=0.1):
    """The augmented inner-product test: the larger of the two tests."""
    ip = inner_product_test(statistics, theta)
    orth = orthogonality_test(statistics, nu)
    if ip is None or orth is None:
        return None
    return max(ip, orth)
