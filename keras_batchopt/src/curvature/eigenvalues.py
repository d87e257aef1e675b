"""The largest Hessian eigenvalues by power iteration with deflation."""

import numpy as np

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.curvature.hessian_vector_product import HessianOperator


@keras_batchopt_export("keras_batchopt.curvature.top_hessian_eigenvalues")
def top_hessian_eigenvalues(
    model,
    x,
    y,
    k=1,
    max_iterations=100,
    tolerance=1e-4,
    seed=0,
    sample_weight=None,
    batch_size=None,
):
    """The `k` eigenvalues of the loss's Hessian largest in magnitude.

    Power iteration on Hessian-vector products, each new vector
    orthogonalized against the eigenvectors already found (deflation, as
    PyHessian does), stopped when the eigenvalue estimate changes by less
    than `tolerance` relative to its size. The top eigenvalue bounds the
    stable learning rate of gradient descent (`2 / lambda_max`) and is
    the sharpness that large batches increase.

    Args:
        model: a compiled `keras.Model`.
        x, y: inputs and targets.
        k: an integer >= 1.
        max_iterations: an integer >= 1, per eigenvalue.
        tolerance: a float > 0, the relative change that stops the
            iteration.
        seed: an integer >= 0 for the NumPy start vectors.
        sample_weight: optional per-sample weights.
        batch_size: see `hessian_vector_product`.

    Returns:
        A dict with `eigenvalues` (a NumPy array of `k` values, in the
        order found: decreasing magnitude), `eigenvectors` (a list of `k`
        lists of arrays shaped like the variables) and `iterations`.

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> model = keras.Sequential(
    ...     [keras.Input((2,)), keras.layers.Dense(1, use_bias=False)]
    ... )
    >>> model.compile(loss="mse")
    >>> x, y = np.array([[1.0, 0.0], [0.0, 2.0]]), np.zeros((2, 1))
    >>> out = keras_batchopt.curvature.top_hessian_eigenvalues(model, x, y)
    >>> round(float(out["eigenvalues"][0]), 3)  # H = diag(1, 4)
    4.0

    References:
        - [Yao et al., 2020](https://arxiv.org/abs/1912.07145), PyHessian.
        - [Keskar et al., 2017](https://arxiv.org/abs/1609.04836), On
          large-batch training: sharp minima.
    """
    k = validation.check_positive_int("k", k)
    max_iterations = validation.check_positive_int(
        "max_iterations", max_iterations
    )
    tolerance = validation.check_positive("tolerance", tolerance)
    operator = HessianOperator(model, x, y, sample_weight, batch_size)
    if k > operator.dim:
        validation.fail("k", f"at most the {operator.dim} parameters", k)
    rng = np.random.RandomState(validation.check_non_negative_int("seed", seed))
    found, vectors, iterations = [], [], []

    def deflate(v):
        for u in vectors:
            v = v - np.dot(v, u) * u
        return v

    for _ in range(k):
        v = deflate(rng.randn(operator.dim))
        v /= np.linalg.norm(v)
        value = None
        for it in range(1, max_iterations + 1):
            hv = deflate(operator.matvec(v))
            new_value = float(np.dot(v, hv))
            norm = np.linalg.norm(hv)
            if norm == 0:
                value = 0.0
                break
            v = hv / norm
            if value is not None and abs(new_value - value) <= tolerance * (
                abs(value) + 1e-12
            ):
                value = new_value
                break
            value = new_value
        found.append(value)
        vectors.append(v)
        iterations.append(it)
    return {
        "eigenvalues": np.array(found),
        "eigenvectors": [operator.split(v) for v in vectors],
        "iterations": iterations,
    }
