"""The Rademacher probes of the Hessian training steps."""

from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.backend import dispatch


@keras_batchopt_export("keras_batchopt.curvature.rademacher_probes")
def rademacher_probes(variables, seed, step):
    """The Rademacher probes a Hessian training step draws at `step`.

    One tensor of +-1 per variable (its shape and dtype), a deterministic
    function of `(seed, step)` on each backend, so that every replica and
    every resumed run draws the same probes. Use them with
    `AdaHessian.using_hessian` in a custom training loop.

    Args:
        variables: the list of variables (anything with `shape`, `dtype`
            and, on torch, `value`).
        seed: a Python integer >= 0 (`AdaHessian.seed`).
        step: a scalar integer, Python or tensor (`optimizer.iterations`).

    Returns:
        A list of backend tensors.

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> w = [keras.Variable(np.zeros((2, 3), "float32"))]
    >>> [z] = keras_batchopt.curvature.rademacher_probes(w, seed=0, step=0)
    >>> sorted(set(np.abs(keras.ops.convert_to_numpy(z)).ravel().tolist()))
    [1.0]

    References:
        - Hutchinson, 1990, A stochastic estimator of the trace of the
          influence matrix for Laplacian smoothing splines.
    """
    return dispatch.backend_module("curvature").rademacher_probes(
        variables, seed, step
    )
