"""An XLA-compiled update step for `model.fit` on TensorFlow without XLA.

On a machine without a GPU, Keras runs TensorFlow training steps as plain
graphs (`jit_compile="auto"` resolves to False there), so every operation of
an optimizer's `update_step` is a separate kernel with a full-size
temporary. This fast path runs the optimizer's own generic `update_step`
loop inside a `tf.function(jit_compile=True)`, which XLA fuses into a few
passes over memory, also when the surrounding step is not compiled. It is
the same code as the generic path, so the numbers agree to rounding.

It stays out of the way where it does not apply: in eager execution (the
generic loop runs) and under a `tf.distribute` strategy (Keras's own
distributed update runs). Sparse gradients do not reach it:
`BatchOptimizer.apply` has made them dense; `can_use` still refuses them.

One compiled program serves every optimizer of the package that computes the
same update: the model's variables, the optimizer's own variables and the
learning rate are arguments of the function, not values it closes over, and
the function is shared by the optimizers whose class, configuration (less
`name` and `learning_rate`), per-variable decisions (`_update_structure()`)
and argument shapes and dtypes agree. TensorFlow keeps every compiled XLA
program until the process exits (its compilation cache has no eviction,
TensorFlow issue 64170), so a learning-rate sweep in a notebook compiles the
update once instead of once per model. The shared functions hold no
optimizer, model or variable. An update that still reads state it was not
given (a subclass defined outside the package, or a trace that captures a
variable) gets a function of its own, as before, which lives as long as its
optimizer. `keras_batchopt.config.disable_fast_paths()` turns the fast path
off.
"""

import contextlib
import json
import threading
import weakref

import tensorflow as tf

from keras_batchopt.src.backend.tensorflow import xla_hints

# Update key -> the compiled update shared by the optimizers with that key.
# Neither keys nor functions refer to an optimizer or a variable.
_SHARED = {}
# Optimizer -> its own compiled update (weak: optimizers are not kept alive).
_PRIVATE = weakref.WeakKeyDictionary()
# The optimizer whose call is being traced (set only during a call).
_TRACING = threading.local()


def can_use(optimizer, grads, variables):
    if tf.executing_eagerly() or tf.distribute.has_strategy():
        return False
    return all(
        isinstance(g, tf.Tensor) and not isinstance(g, tf.IndexedSlices)
        for g in grads
    )


def _new_function():
    @tf.function(jit_compile=True, autograph=False)
    def function(grads, tf_variables, state, learning_rate):
        del state  # Read through the optimizer's own slots: the same objects.
        owner = getattr(_TRACING, "optimizer", None)
        # Traced for XLA: the `ops.xla_hints` act here.
        with xla_hints.xla_tracing():
            grads = owner._transform_gradients(grads, tf_variables)
            for grad, variable in zip(grads, tf_variables):
                owner.update_step(grad, variable, learning_rate)

    return function


def _specs(structure):
    return tuple(
        (tuple(t.shape), t.dtype.name) for t in tf.nest.flatten(structure)
    )


def _update_key(optimizer, variables, args):
    """What the traced update depends on; None where that is not known."""
    if not type(optimizer).__module__.startswith("keras_batchopt."):
        return None
    with tf.init_scope():  # Keras's get_config reads variables eagerly.
        config = dict(optimizer.get_config())
    for name in ("name", "learning_rate"):
        config.pop(name, None)
    indices = tuple(optimizer._get_variable_index(v) for v in variables)
    return (
        type(optimizer),
        json.dumps(config, sort_keys=True, default=repr),
        optimizer._update_structure(),
        indices,
        _specs(args),
    )


def _captures_state(concrete_function):
    """True if the trace reads a tensor it was not given as an argument:
    a variable, or a tensor of the graph that called it."""
    return any(
        t.dtype == tf.resource or tf.is_symbolic_tensor(t)
        for t in concrete_function.captured_inputs
    )


def _compiled_update(optimizer, variables, args):
    function = _PRIVATE.get(optimizer)
    if function is not None:
        return function
    key = _update_key(optimizer, variables, args)
    function = _SHARED.get(key) if key is not None else None
    if function is not None:
        return function
    function = _new_function()
    concrete_function = function.get_concrete_function(*args)
    if key is None or _captures_state(concrete_function):
        _PRIVATE[optimizer] = function
        return function
    # Every variable the update reads is an argument, but TensorFlow still
    # lists the ones Keras made inside a traced step (lifted-initializer
    # variables) in the trace's weak list of accessed variables, and refuses
    # every call once they are freed: the list is dropped (the update is
    # never differentiated, which is all the list serves).
    concrete_function.graph.variables = ()
    _SHARED[key] = function
    return function


def update_arguments(optimizer, grads, variables, learning_rate):
    """The arguments of the compiled update, in its order."""
    return (
        list(grads),
        [getattr(v, "value", v) for v in variables],
        [getattr(v, "value", v) for v in optimizer.variables],
        tf.convert_to_tensor(learning_rate),
    )


def compiled_update(optimizer, grads, variables, learning_rate):
    """The compiled update for these arguments, and the arguments."""
    args = update_arguments(optimizer, grads, variables, learning_rate)
    with _tracing(optimizer):
        return _compiled_update(optimizer, variables, args), args


def update_step(optimizer, grads, variables, learning_rate):
    args = update_arguments(optimizer, grads, variables, learning_rate)
    with _tracing(optimizer):
        _compiled_update(optimizer, variables, args)(*args)


@contextlib.contextmanager
def _tracing(optimizer):
    """Makes `optimizer` the one a trace starting now reads."""
    _TRACING.optimizer = optimizer
    try:
        yield
    finally:
        _TRACING.optimizer = None
