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

Memory: each optimizer compiles its own XLA program (it closes over that
optimizer's variables), and TensorFlow keeps every compiled program until
the process exits, also after the optimizer and its function are freed:
its compilation cache has no eviction (TensorFlow issue 64170). A process
that trains many models, such as a learning-rate sweep in a notebook,
grows by one program per model (about 8 MB for Adan on a small MLP with
TensorFlow 2.21, allocator-independent).
`keras_batchopt.config.disable_fast_paths()` avoids it.
"""

import weakref

import tensorflow as tf

from keras_batchopt.src.backend.tensorflow import xla_hints

# Optimizer -> its compiled update; weak, so optimizers are not kept alive.
_COMPILED = weakref.WeakKeyDictionary()


def can_use(optimizer, grads, variables):
    if tf.executing_eagerly() or tf.distribute.has_strategy():
        return False
    return all(
        isinstance(g, tf.Tensor) and not isinstance(g, tf.IndexedSlices)
        for g in grads
    )


def _compiled_update(optimizer):
    function = _COMPILED.get(optimizer)
    if function is None:
        # The function reaches its optimizer through a weak reference: a
        # value of a WeakKeyDictionary that holds its key strongly keeps
        # the key, the optimizer, its model and the function alive forever.
        optimizer_ref = weakref.ref(optimizer)

        @tf.function(jit_compile=True, autograph=False)
        def function(grads, tf_variables, learning_rate):
            owner = optimizer_ref()
            # Traced for XLA: the `ops.xla_hints` act here.
            with xla_hints.xla_tracing():
                grads = owner._transform_gradients(grads, tf_variables)
                for grad, variable in zip(grads, tf_variables):
                    owner.update_step(grad, variable, learning_rate)

        _COMPILED[optimizer] = function
    return function


def update_step(optimizer, grads, variables, learning_rate):
    tf_variables = [getattr(v, "value", v) for v in variables]
    _compiled_update(optimizer)(
        list(grads), tf_variables, tf.convert_to_tensor(learning_rate)
    )
