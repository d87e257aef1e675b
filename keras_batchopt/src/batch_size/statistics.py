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


def _unbiased(sum_of_squares, size):
    return sum_of_squares / (ops.cast(size, "float32") - 1.0)


def _variance(values, size):
    return _unbiased(ops.sum(ops.square(values - ops.mean(values))), size)


def _safe_divide(numerator, denominator):
    safe = ops.where(denominator > 0, denominator, 1.0)
    return ops.where(denominator > 0, numerator / safe, 0.0)


def variable_parts(per_sample, size):
    """One variable's ``(||m||^2, sum_j Var_i(g_ij), <g_i, m>)``.

    Read three times: the batch mean and the centered sum of squares, and
    one matrix-vector product for the inner products. Column means are
    taken as a product with a vector of `1/b`, which XLA on CPU runs much
    faster than a reduction over the batch axis.

    Args:
        per_sample: the per-sample gradients, shape ``(b, *variable.shape)``.
        size: ``b``.
    """
    weights = ops.ones((1, size), "float32") / ops.cast(size, "float32")
    flat = ops.reshape(ops.cast(per_sample, "float32"), (size, -1))
    mean = ops.matmul(weights, flat)  # (1, n)
    sq_norm = ops.sum(ops.square(mean))
    variance = _unbiased(ops.sum(ops.square(flat - mean)), size)
    products = ops.matmul(flat, ops.transpose(mean))[:, 0]
    return sq_norm, variance, products


def dense_kernel_parts(inputs, output_gradients, size):
    """`variable_parts` of a Dense kernel without its per-sample gradients.

    Sample ``i``'s kernel gradient is ``g_i = sum_t a_it delta_it^T`` for
    the layer's inputs ``a_i`` (``T x n``, ``T = 1`` for flat inputs) and
    the loss's gradients ``delta_i`` (``T x k``) at its output before the
    activation, so with ``M = mean_i g_i``:

    ```
    ||g_i||^2    = sum_{s,t} (a_is . a_it) (delta_is . delta_it)
                 = ||a_i||^2 ||delta_i||^2                  (T = 1)
    <g_i, M>     = sum_t a_it^T M delta_it
    sum_j Var_i(g_ij) = (sum_i ||g_i||^2 - b ||M||^2) / (b - 1)
    ```

    The ``T x T`` Gram matrices are used while ``T (n + k) <= n k``;
    beyond that the per-sample gradients are cheaper and are formed
    (Gram matrices also where ``T`` is not known when tracing). The
    variance is a difference of sums rather than a sum of centered
    squares: its float32 rounding error is about 1e-7 of
    ``sum_i ||g_i||^2 = (b - 1) Var + b ||M||^2``, so it is relatively
    larger only where the variance is far below ``||M||^2``, where the
    tests ask for the smallest batches anyway.

    Args:
        inputs: ``a``, shape ``(b, T, n)``.
        output_gradients: ``delta``, shape ``(b, T, k)``.
        size: ``b``.
    """
    a = ops.cast(inputs, "float32")
    d = ops.cast(output_gradients, "float32")
    steps, n = a.shape[1], a.shape[2]
    k = d.shape[2]
    if steps is not None and steps * (n + k) > n * k:
        return variable_parts(ops.einsum("bti,bto->bio", a, d), size)
    rows = (-1, n)
    mean = ops.matmul(
        ops.transpose(ops.reshape(a, rows)), ops.reshape(d, (-1, k))
    ) / ops.cast(size, "float32")
    sq_norm = ops.sum(ops.square(mean))
    if steps == 1:
        norms = ops.sum(ops.square(a), axis=(1, 2)) * ops.sum(
            ops.square(d), axis=(1, 2)
        )
    else:
        gram_a = ops.matmul(a, ops.transpose(a, (0, 2, 1)))
        gram_d = ops.matmul(d, ops.transpose(d, (0, 2, 1)))
        norms = ops.sum(gram_a * gram_d, axis=(1, 2))
    size_f = ops.cast(size, "float32")
    variance = _unbiased(ops.sum(norms) - size_f * sq_norm, size)
    products = ops.sum(ops.matmul(a, mean) * d, axis=(1, 2))
    return sq_norm, variance, products


def combine(parts, size, scope="per_variable"):
    """The four statistics above (float32 scalars, a dict) from each
    variable's `variable_parts`.

    The orthogonal variance follows from the others, without forming the
    projections:

    ```
    sum_i ||o_i - mean(o)||^2 = sum_i ||g_i - m||^2 - Var(<g_i, m>)
                                * (b - 1) / ||m||^2
    ```
    """
    sq_norms = [p[0] for p in parts]
    variances = [p[1] for p in parts]
    products = [p[2] for p in parts]
    sq_norm = sum(sq_norms)
    variance_l1 = sum(variances)
    if scope == "per_variable":
        ip_vars = [_variance(p, size) for p in products]
        inner_product_var = sum(ip_vars)
        orthogonal_var = sum(
            v - _safe_divide(ip, s)
            for v, ip, s in zip(variances, ip_vars, sq_norms)
        )
    else:
        inner_product_var = _variance(sum(products), size)
        orthogonal_var = variance_l1 - _safe_divide(inner_product_var, sq_norm)
    return {
        "sq_norm": sq_norm,
        "variance_l1": variance_l1,
        "inner_product_var": inner_product_var,
        "orthogonal_var": orthogonal_var,
    }


def gradient_statistics(per_sample_gradients, scope="per_variable"):
    """The four statistics above as float32 scalars (a dict).

    Args:
        per_sample_gradients: a list of tensors, one per variable, each of
            shape ``(b, *variable.shape)`` with ``b >= 2``.
        scope: ``"per_variable"`` or ``"global"``.
    """
    size = ops.shape(per_sample_gradients[0])[0]
    parts = [variable_parts(g, size) for g in per_sample_gradients]
    return combine(parts, size, scope)


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
