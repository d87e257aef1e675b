"""Hessian-vector products of a compiled Keras model's loss."""

import keras
import numpy as np

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.backend import dispatch


def _check_model(model):
    if not isinstance(model, keras.Model):
        validation.fail("model", "a keras.Model", model)
    if getattr(model, "_compile_loss", None) is None:
        raise ValueError(
            "Argument `model` must be compiled with a loss (the curvature "
            "tools differentiate `model.compile(loss=...)`'s loss). "
            f"Received: an uncompiled model {model.name!r}"
        )
    if not model.trainable_variables:
        raise ValueError(
            "Argument `model` must have trainable variables. Received: "
            f"model {model.name!r} with none"
        )


def _batches(x, y, sample_weight, batch_size):
    """[(x, y, sample_weight, fraction of the samples)]."""
    n = len(keras.tree.flatten(x)[0])
    if batch_size is None:
        batch_size = n
    batch_size = validation.check_positive_int("batch_size", batch_size)
    out = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)

        def part(a, start=start, stop=stop):
            return (
                None
                if a is None
                else keras.ops.convert_to_tensor(np.asarray(a)[start:stop])
            )

        out.append(
            (
                keras.tree.map_structure(part, x),
                keras.tree.map_structure(part, y),
                part(sample_weight),
                (stop - start) / n,
            )
        )
    return out


class HessianOperator:
    """The Hessian of the model's loss over `(x, y)` as a matrix-free
    operator on flat float64 NumPy vectors (for the NumPy eigen-solvers).

    The loss is the compiled loss in inference mode (dropout off, batch
    statistics frozen), averaged over batches of `batch_size` samples
    weighted by their size: the full-data Hessian when the loss is a mean.
    """

    def __init__(self, model, x, y, sample_weight=None, batch_size=None):
        _check_model(model)
        self.variables = list(model.trainable_variables)
        self.shapes = [tuple(v.shape) for v in self.variables]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.dim = int(sum(self.sizes))
        self._dtypes = [v.dtype for v in self.variables]
        curvature = dispatch.backend_module("curvature")
        self._hvp = curvature.make_hessian_vector_product(model)
        self._batches = _batches(x, y, sample_weight, batch_size)
        self.calls = 0

    def split(self, flat):
        """A flat vector as a list shaped like the variables."""
        parts = np.split(np.asarray(flat), np.cumsum(self.sizes)[:-1])
        return [p.reshape(s) for p, s in zip(parts, self.shapes)]

    def product(self, vectors):
        """`H v` for `v` a list shaped like the variables (NumPy float64)."""
        self.calls += 1
        total = [np.zeros(s, np.float64) for s in self.shapes]
        for x, y, weight, fraction in self._batches:
            cast = [
                keras.ops.convert_to_tensor(np.asarray(v), dtype=d)
                for v, d in zip(vectors, self._dtypes)
            ]
            _, hvps = self._hvp(x, y, weight, cast)
            for t, h in zip(total, hvps):
                t += fraction * keras.ops.convert_to_numpy(h).astype(np.float64)
        return total

    def matvec(self, flat):
        """`H v` for a flat vector."""
        return np.concatenate(
            [p.ravel() for p in self.product(self.split(flat))]
        )


@keras_batchopt_export("keras_batchopt.curvature.hessian_vector_product")
def hessian_vector_product(
    model, x, y, vectors, sample_weight=None, batch_size=None
):
    """The Hessian of a compiled model's loss times `vectors`.

    Computed on the current backend: `jax.jvp` of `jax.grad` on JAX,
    nested gradient tapes on TensorFlow, a double backward on torch. The
    loss is the compiled one (plus regularization losses) in inference
    mode, at the model's current weights.

    Args:
        model: a compiled `keras.Model`.
        x, y: the inputs and targets (arrays or structures of arrays).
        vectors: one array per trainable variable, of its shape.
        sample_weight: optional per-sample weights.
        batch_size: evaluate in batches of this many samples and average
            them weighted by size (the full-data Hessian when the loss is a
            mean). Defaults to one batch.

    Returns:
        A list of float64 NumPy arrays, one per trainable variable.

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> model = keras.Sequential(
    ...     [keras.Input((3,)), keras.layers.Dense(1, use_bias=False)]
    ... )
    >>> model.compile(loss="mse")
    >>> x, y = np.eye(3), np.zeros((3, 1))
    >>> [hv] = keras_batchopt.curvature.hessian_vector_product(
    ...     model, x, y, [np.ones((3, 1))]
    ... )
    >>> np.round(hv.ravel(), 4).tolist()  # H = 2/3 I for this loss
    [0.6667, 0.6667, 0.6667]

    References:
        - Pearlmutter, 1994, Fast exact multiplication by the Hessian.
    """
    operator = HessianOperator(model, x, y, sample_weight, batch_size)
    if len(vectors) != len(operator.shapes):
        raise ValueError(
            "Argument `vectors` must hold one array per trainable variable "
            f"({len(operator.shapes)}). Received: {len(vectors)} arrays"
        )
    for v, shape in zip(vectors, operator.shapes):
        if tuple(np.shape(v)) != shape:
            raise ValueError(
                "Argument `vectors` must match the trainable variables' "
                f"shapes {operator.shapes}. Received: shapes "
                f"{[tuple(np.shape(u)) for u in vectors]}"
            )
    return operator.product([np.asarray(v, np.float64) for v in vectors])
