"""Per-sample gradient statistics of a Keras model, per backend."""

import math

import keras
import numpy as np
from keras import ops

from keras_batchopt.src import config
from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.backend import dispatch
from keras_batchopt.src.batch_size import dense_taps
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


def _expand(structure):
    return keras.tree.map_structure(lambda a: ops.expand_dims(a, 0), structure)


def _as_sequence(tensor, size):
    """``(b, 1, *steps, n) -> (b, T, n)``, ``T`` static where the steps are
    (TensorFlow's relaxed traces leave the batch size unknown)."""
    middle = tuple(tensor.shape[1:-1])
    if all(m is not None for m in middle):
        return ops.reshape(tensor, (-1, math.prod(middle), tensor.shape[-1]))
    return ops.reshape(tensor, (size, -1, tensor.shape[-1]))


class _Plan:
    """Which trainable variables come from Dense taps, which from
    per-sample gradients (the fallback), for one per-sample input shape."""

    def __init__(self, model, x, fast):
        layers = dense_taps.candidates(model) if fast else []
        taps = dense_taps.DenseTaps(layers)
        if layers:
            one = keras.tree.map_structure(lambda a: a[:1], x)
            with taps.active():
                model(one, training=False)
        # A layer called more than once (shared) falls back.
        kept = [i for i, n in enumerate(taps.calls) if n == 1]
        self.taps = dense_taps.DenseTaps([layers[i] for i in kept])
        self.shapes = [taps.output_shapes[i] for i in kept]
        index = {id(v): i for i, v in enumerate(model.trainable_variables)}
        self.dense = []  # per tapped layer: (kernel index, bias index)
        for layer in self.taps.layers:
            bias = getattr(layer, "bias", None)
            bias = index.get(id(bias)) if bias is not None else None
            self.dense.append((index[id(layer.kernel)], bias))
        tapped = {i for pair in self.dense for i in pair if i is not None}
        self.fallback = [i for i in range(len(index)) if i not in tapped]
        self.tapped = sorted(tapped)

    def split(self, trainable):
        return (
            [trainable[i] for i in self.fallback],
            [trainable[i] for i in self.tapped],
        )

    def join(self, fallback, tapped):
        values = dict(zip(self.fallback, fallback))
        values.update(zip(self.tapped, tapped))
        return [values[i] for i in range(len(values))]


class StatisticsFunction:
    """A compiled ``(x, y) -> statistics`` for one model (built lazily).

    Trainable plain Dense layers called once are tapped (their inputs and
    output gradients give their statistics, see `dense_taps`) while
    `keras_batchopt.config.fast_paths_enabled()`; every other variable's
    per-sample gradients are formed.
    """

    def __init__(self, model, loss=None, scope="per_variable"):
        self.model = model
        self.scope = validation.check_one_of(
            "inner_product_scope", scope, stats_lib.SCOPES
        )
        self._loss = _per_sample_loss(_loss_object(model, loss))
        self._runs = {}

    def _build(self, plan):
        model, loss, scope = self.model, self._loss, self.scope
        taps, fallback_count = plan.taps, len(plan.fallback)

        def sample_loss(wrt, constants, x_i, y_i):
            fallback, zeros = wrt[:fallback_count], wrt[fallback_count:]
            tapped, non_trainable = constants
            with taps.active(zeros):
                y_pred, _ = model.stateless_call(
                    plan.join(fallback, tapped),
                    non_trainable,
                    _expand(x_i),
                    training=False,
                )
            return loss(_expand(y_i), y_pred), list(taps.inputs)

        def statistics(gradients, inputs):
            size = ops.shape(gradients[0])[0]
            parts = [
                stats_lib.variable_parts(g, size)
                for g in gradients[:fallback_count]
            ]
            deltas = gradients[fallback_count:]
            for a, d, (_, bias) in zip(inputs, deltas, plan.dense):
                a, d = _as_sequence(a, size), _as_sequence(d, size)
                parts.append(stats_lib.dense_kernel_parts(a, d, size))
                if bias is not None:
                    bias_grads = ops.sum(d, axis=1)
                    parts.append(stats_lib.variable_parts(bias_grads, size))
            return stats_lib.combine(parts, size, scope)

        module = dispatch.backend_module("per_sample")
        return module.compile_statistics(sample_loss, statistics)

    def _run(self, x):
        key = (
            config.fast_paths_enabled(),
            tuple(tuple(a.shape[1:]) for a in keras.tree.flatten(x)),
        )
        if key not in self._runs:
            plan = _Plan(self.model, x, key[0])
            self._runs[key] = (plan, self._build(plan))
        return self._runs[key]

    def __call__(self, x, y):
        size = len(keras.tree.flatten(x)[0])
        if size < 2:
            raise ValueError(
                "Argument `x` must hold at least 2 samples for unbiased "
                f"variances. Received: x with {size} sample(s)"
            )
        convert = lambda a: ops.convert_to_tensor(np.asarray(a))  # noqa: E731
        x = keras.tree.map_structure(convert, x)
        y = keras.tree.map_structure(convert, y)
        plan, run = self._run(x)
        fallback, tapped = plan.split(
            [v.value for v in self.model.trainable_variables]
        )
        zeros = [ops.zeros(shape, "float32") for shape in plan.shapes]
        non_trainable = [v.value for v in self.model.non_trainable_variables]
        result = run(fallback + zeros, (tapped, non_trainable), x, y)
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

    For trainable `keras.layers.Dense` layers (not subclassed, LoRA,
    quantized, shared or inside a wrapper such as `TimeDistributed`) the
    per-sample kernel gradients `g_i = sum_t a_it delta_it^T` are not
    formed: the same vectorized map gives each sample's layer inputs `a_i`
    and the gradients `delta_i` at the layer's output before the
    activation, and

    ```
    ||g_i||^2 = ||a_i||^2 ||delta_i||^2    (inputs of rank 2)
              = sum_{s,t} (a_is . a_it) (delta_is . delta_it)   (rank > 2)
    <g_i, m>  = sum_t a_it^T m delta_it
    ```

    (the bias gradient is `sum_t delta_it`): no per-sample copy of a
    kernel is made, and on an MLP a test costs one to two training steps
    of the same batch (`benchmarks/schedules_and_batch_tests.py`).
    The same statistics from formed per-sample gradients run under
    `keras_batchopt.config.fast_paths(False)`.

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
