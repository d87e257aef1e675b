"""Hutchinson estimates of the Hessian's diagonal and trace."""

import numpy as np

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.curvature.hessian_vector_product import HessianOperator


def _rademacher(rng, shapes):
    return [rng.choice([-1.0, 1.0], size=s) for s in shapes]


def _samples(operator, num_samples, seed):
    """Yields `(z, Hz)` for `num_samples` seeded Rademacher probes."""
    num_samples = validation.check_positive_int("num_samples", num_samples)
    rng = np.random.RandomState(validation.check_non_negative_int("seed", seed))
    for _ in range(num_samples):
        z = _rademacher(rng, operator.shapes)
        yield z, operator.product(z)


@keras_batchopt_export("keras_batchopt.curvature.hutchinson_diagonal")
def hutchinson_diagonal(
    model, x, y, num_samples=100, seed=0, sample_weight=None, batch_size=None
):
    """Hutchinson's estimate of the diagonal of the loss's Hessian.

    `diag(H) ~ mean_s z_s * (H z_s)` over `num_samples` Rademacher probes
    `z_s` (entries +-1, drawn by NumPy from `seed`, so the same on every
    backend). Unbiased; the variance of coordinate `i` is
    `sum_{j != i} H_ij**2 / num_samples`, so it is exact for a diagonal
    Hessian.

    Args:
        model: a compiled `keras.Model`.
        x, y: inputs and targets.
        num_samples: an integer >= 1, the number of probes.
        seed: an integer >= 0.
        sample_weight: optional per-sample weights.
        batch_size: see `hessian_vector_product`.

    Returns:
        A list of float64 NumPy arrays, one per trainable variable.

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> model = keras.Sequential(
    ...     [keras.Input((2,)), keras.layers.Dense(1, use_bias=False)]
    ... )
    >>> model.compile(loss="mse")
    >>> x, y = np.array([[1.0, 0.0], [0.0, 2.0]]), np.zeros((2, 1))
    >>> [d] = keras_batchopt.curvature.hutchinson_diagonal(model, x, y, 4)
    >>> np.round(d.ravel(), 4).tolist()  # H = diag(1, 4): exact
    [1.0, 4.0]

    References:
        - Hutchinson, 1990; Bekas, Kokiopoulou and Saad, 2007 (diagonal).
        - [Yao et al., 2020](https://arxiv.org/abs/1912.07145), PyHessian.
    """
    operator = HessianOperator(model, x, y, sample_weight, batch_size)
    total = [np.zeros(s) for s in operator.shapes]
    count = 0
    for z, hz in _samples(operator, num_samples, seed):
        for t, a, b in zip(total, z, hz):
            t += a * b
        count += 1
    return [t / count for t in total]


@keras_batchopt_export("keras_batchopt.curvature.hutchinson_trace")
def hutchinson_trace(
    model, x, y, num_samples=100, seed=0, sample_weight=None, batch_size=None
):
    """Hutchinson's estimate of the trace of the loss's Hessian.

    `tr(H) ~ mean_s z_s^T H z_s` over `num_samples` Rademacher probes; the
    variance of one sample is `2 * sum_{i != j} H_ij**2`. A flatness
    measure (the trace of the Hessian at the end of training).

    Args:
        model: a compiled `keras.Model`.
        x, y: inputs and targets.
        num_samples: an integer >= 1.
        seed: an integer >= 0.
        sample_weight: optional per-sample weights.
        batch_size: see `hessian_vector_product`.

    Returns:
        A dict with `trace` (the mean) and `standard_error` (the sample
        standard deviation over `sqrt(num_samples)`; 0 for one sample).

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> model = keras.Sequential(
    ...     [keras.Input((2,)), keras.layers.Dense(1, use_bias=False)]
    ... )
    >>> model.compile(loss="mse")
    >>> x, y = np.array([[1.0, 0.0], [0.0, 2.0]]), np.zeros((2, 1))
    >>> out = keras_batchopt.curvature.hutchinson_trace(model, x, y, 3)
    >>> round(out["trace"], 4)
    5.0

    References:
        - Hutchinson, 1990; [Yao et al., 2020](https://arxiv.org/abs/1912.07145).
    """
    operator = HessianOperator(model, x, y, sample_weight, batch_size)
    values = [
        float(sum(np.sum(a * b) for a, b in zip(z, hz)))
        for z, hz in _samples(operator, num_samples, seed)
    ]
    error = 0.0
    if len(values) > 1:
        error = float(np.std(values, ddof=1) / np.sqrt(len(values)))
    return {"trace": float(np.mean(values)), "standard_error": error}
