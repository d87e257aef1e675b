"""Per-sample gradient statistics of a Keras model, per backend."""

import keras
import numpy as np
from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.backend import dispatch
from keras_batchopt.src.batch_size import statistics as stats_lib


def _loss_object(model, loss):
    loss = loss if loss is not None else getattr(model, "loss", None)
    if loss is None:
        raise ValueError(
            "Argument `loss` must be given when the model is not compiled "
            "with a single loss. Received: loss=None"
        )
    if isinstance(loss, (list, tuple, dict)):
        raise ValueError(
            "Argument `loss` must be one loss for a single-output model "
            "(per-sample statistics of multi-output losses are not "
            f"supported). Received: loss={loss!r}"
        )
    return keras.losses.get(loss)


def _per_sample_loss(loss):
    """One sample's loss: the mean of the unreduced loss over its
    elements, which is what "sum_over_batch_size" gives a batch of one."""
    call = loss.call if isinstance(loss, keras.losses.Loss) else loss

    def per_sample(y_true, y_pred):
        return ops.mean(call(y_true, y_pred))

    return per_sample


class StatisticsFunction:
    """A compiled ``(x, y) -> statistics`` for one model (built lazily)."""

    def __init__(self, model, loss=None, scope="per_variable"):
        self.model = model
        self.scope = validation.check_one_of(
            "inner_product_scope", scope, stats_lib.SCOPES
        )
        self._loss = _per_sample_loss(_loss_object(model, loss))
        self._run = None

    def _build(self):
        model, loss, scope = self.model, self._loss, self.scope

        def sample_loss(trainable, non_trainable, x_i, y_i):
            expand = lambda a: ops.expand_dims(a, 0)  # noqa: E731
            x_b = keras.tree.map_structure(expand, x_i)
            y_b = keras.tree.map_structure(expand, y_i)
            y_pred, _ = model.stateless_call(
                trainable, non_trainable, x_b, training=False
            )
            return loss(y_b, y_pred)

        def statistics(gradients):
            return stats_lib.gradient_statistics(list(gradients), scope)

        module = dispatch.backend_module("per_sample")
        return module.compile_statistics(sample_loss, statistics)

    def __call__(self, x, y):
        size = len(keras.tree.flatten(x)[0])
        if size < 2:
            raise ValueError(
                "Argument `x` must hold at least 2 samples for unbiased "
                f"variances. Received: x with {size} sample(s)"
            )
        if self._run is None:
            self._run = self._build()
        convert = lambda a: ops.convert_to_tensor(np.asarray(a))  # noqa: E731
        x = keras.tree.map_structure(convert, x)
        y = keras.tree.map_structure(convert, y)
        trainable = [v.value for v in self.model.trainable_variables]
        non_trainable = [v.value for v in self.model.non_trainable_variables]
        result = self._run(trainable, non_trainable, x, y)
        return {k: float(ops.convert_to_numpy(v)) for k, v in result.items()}


@keras_batchopt_export("keras_batchopt.batch_size.gradient_statistics")
def gradient_statistics(model, x, y, loss=None, scope="per_variable"):
    """Gradient-noise statistics of a model's loss from per-sample
    gradients.

    Per-sample gradients come from `jax.vmap(jax.grad)` on JAX,
    `torch.func.vmap(torch.func.grad)` on torch and `tf.vectorized_map` on
    TensorFlow, with the model in inference mode (`training=False`: dropout
    off, batch normalization on its moving statistics, so that samples do
    not interact).

    ```
    m = mean_i g_i                               (the batch gradient)
    sq_norm           = ||m||^2
    variance_l1       = sum_j Var_i(g_ij)        (unbiased)
    inner_product_var = Var_i(<g_i, m>)
    orthogonal_var    = sum_j Var_i(g_i - <g_i, m> m / ||m||^2)_j
    ```

    Args:
        model: a built Keras model.
        x: a batch of inputs (at least 2 samples), arrays or a structure of
            arrays.
        y: the matching targets.
        loss: the loss, a `keras.losses.Loss`, a name or a function of
            `(y_true, y_pred)`. Defaults to the model's compiled loss.
        scope: `"per_variable"` (default; AdAdaGrad's code): inner
            products and projections per variable, variances summed; or
            `"global"` (the papers' formulas): over all variables at once.

    Returns:
        A dict of Python floats with the four statistics above.

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    >>> x = np.random.randn(16, 3).astype("float32")
    >>> y = np.random.randint(0, 2, 16)
    >>> stats = keras_batchopt.batch_size.gradient_statistics(
    ...     model, x, y,
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> sorted(stats)
    ['inner_product_var', 'orthogonal_var', 'sq_norm', 'variance_l1']

    References:
        - Lau, Liu and Kolar, 2024, [AdAdaGrad: Adaptive Batch Size Schemes
          for Adaptive Gradient Methods](https://arxiv.org/abs/2402.11215)
    """
    return StatisticsFunction(model, loss, scope)(x, y)
