"""State that a custom backward pass updates, the same on every backend.

PowerNorm and Unified Normalization update running gradient statistics in
their backward pass; ProgressiveRepBN advances its schedule once per
optimizer update. A backward pass cannot assign variables on JAX (and
should not on any backend, for stateless training). So each such
variable is a trainable weight with Keras's `overwrite_with_gradient` set,
the channel Keras itself uses for the float8 scales computed in the
backward pass: the custom backward returns the variable's *new value* as
its "gradient", and every Keras optimizer's `apply` assigns it instead of
taking a descent step (no learning rate, clipping, weight decay or loss
scaling). The update then happens where Keras applies gradients, under
`fit`, `jit_compile`, JAX's stateless `apply` and custom loops that call
`optimizer.apply`.

Under `tf.distribute` (tested with `MirroredStrategy` on two CPU replicas)
Keras's optimizer assigns these variables in each replica, before it sums
the gradients across the replicas: each replica's copy takes the value
that replica computed (`get_weights` and checkpoints read the first
replica's). With `synchronized=True`, PowerNorm and Unified Normalization
sum their backward pass's batch reductions across the replicas, so the
copies are equal (tested); without it each replica's gradient statistics
are those of its own part of the batch, as its batch statistics are. The
update counter of `ProgressiveRepBN` advances once per update.

Consequences, stated in each layer's docstring:
- the update needs a Keras optimizer's `apply` (a hand-written SGD loop
  over `trainable_weights` would descend on them);
- with `gradient_accumulation_steps`, Keras merges the micro-batch values
  of such variables by an element-wise maximum, and assigns at the update;
- Keras < 3.10's `LossScaleOptimizer` divides these gradients by the loss
  scale too (`check_loss_scaling` warns under `mixed_float16`), and the
  EMA (`use_ema=True`) of its own optimizers averages these variables and
  overwrites them at the end of `fit`; Keras >= 3.10 leaves them out of
  both;
- with `use_ema=True` on TensorFlow, Keras 3.15's own optimizers fail at
  the end of `fit` on such variables (their TensorFlow EMA overwrite does
  not skip them, unlike the generic one);
- keras_batchopt's optimizers leave them out of EMA on every supported
  Keras (`BatchOptimizer._averaged`).
"""

import warnings

import keras
from keras import ops

from keras_batchopt.src.backend import dispatch


def _backend():
    return dispatch.backend_module("custom_gradient")


def custom_vjp(forward, backward):
    """`f(*inputs)` with value `forward(*inputs)[0]` and the cotangents
    `backward(residuals, d_output)`, one per input (None for none)."""
    return _backend().custom_vjp(forward, backward)


def concrete_value(variable):
    """A variable's stored value as NumPy, or None where it cannot be read
    (inside a JAX transformation)."""
    return _backend().concrete_value(variable)


def call_on_host(function, variable):
    """`function(value)` with the variable's NumPy value when the traced
    computation runs, for where `concrete_value` is None (JAX)."""
    _backend().call_on_host(function, ops.convert_to_tensor(variable))


def add_backward_state(layer, name, shape, initializer="zeros"):
    """A float32 variable that the layer's backward pass sets."""
    variable = layer.add_weight(
        shape=shape,
        name=name,
        initializer=initializer,
        trainable=True,
        autocast=False,
    )
    variable.overwrite_with_gradient = True
    return variable


def _keras_version():
    return tuple(int(p) for p in keras.version().split(".")[:2])


def check_loss_scaling(layer):
    """Warns, under `mixed_float16` on Keras < 3.10, that the loss-scale
    optimizer will divide the backward state by the loss scale."""
    old_keras = _keras_version() < (3, 10)
    if layer.dtype_policy.name == "mixed_float16" and old_keras:
        warnings.warn(
            f"{type(layer).__name__} keeps state set by its backward pass; "
            f"Keras {keras.version()}'s LossScaleOptimizer divides it by "
            "the loss scale. Use Keras >= 3.10 with `mixed_float16`, or "
            "`mixed_bfloat16` (no loss scaling).",
            stacklevel=3,
        )


def _count_forward(output, counter):
    return output, counter


def _count_backward(counter, d_output):
    return d_output, counter + 1.0


def count_updates(output, counter):
    """`output` unchanged; its backward pass sets `counter` (a backward
    state variable) to `counter + 1`: one tick per optimizer update."""
    return custom_vjp(_count_forward, _count_backward)(
        output, ops.convert_to_tensor(counter)
    )
