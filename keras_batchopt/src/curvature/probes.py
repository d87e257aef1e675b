"""What the Hessian training steps share: the backend module, the Hessian
optimizer behind a wrapper, and the Rademacher probes."""

import importlib

import keras

from keras_batchopt.src.api_export import keras_batchopt_export


def backend_module():
    """`keras_batchopt.src.backend.<backend>.curvature`, imported lazily."""
    return importlib.import_module(
        f"keras_batchopt.src.backend.{keras.backend.backend()}.curvature"
    )


def model_loss(model, x, y, sample_weight, training):
    """The compiled loss of `model` on `(x, y)` and its predictions, as
    Keras's TensorFlow and torch training steps compute them."""
    kwargs = {"training": training} if model._call_has_training_arg else {}
    y_pred = model(x, **kwargs)
    loss = model._compute_loss(
        x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training
    )
    return loss, y_pred


def hessian_optimizer(optimizer):
    """The optimizer that wants Hessian-vector products (unwrapping a
    `LossScaleOptimizer`), or None."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return inner if getattr(inner, "needs_hessian", False) else None


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
    return backend_module().rademacher_probes(variables, seed, step)


def skip_step_on_overflow(optimizer, grads, hvps):
    """Under a `LossScaleOptimizer`, a non-finite Hessian-vector product is
    an overflow of the scaled loss like a non-finite gradient: the
    gradients are made non-finite too, so that the wrapper skips the step
    and lowers the scale instead of the Hessian average keeping an inf."""
    if not hasattr(optimizer, "inner_optimizer"):
        return grads
    finite = None
    for h in hvps:
        ok = keras.ops.all(keras.ops.isfinite(h))
        finite = ok if finite is None else keras.ops.logical_and(finite, ok)
    return [
        keras.ops.where(finite, g, keras.ops.full_like(g, float("nan")))
        for g in grads
    ]
