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
    """
    return backend_module().rademacher_probes(variables, seed, step)
