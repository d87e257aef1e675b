"""The TensorFlow fast path's XLA update writes the new state in place: no
state buffer is copied first. Collected on the tensorflow backend only.
"""

import re

import keras
import numpy as np
import tensorflow as tf

from keras_batchopt.optimizers import Adan
from keras_batchopt.src.backend.tensorflow import xla_hints
from keras_batchopt.src.backend.tensorflow.optimizers import xla_update
from keras_batchopt.src.ops.xla_hints import after

SHAPES = [(64, 32), (3, 3, 4, 8), (32,)]


def optimized_hlo(optimizer):
    """The optimized HLO of the fast path's compiled update."""
    rng = np.random.RandomState(0)
    variables = [
        keras.Variable(rng.randn(*s).astype("float32")) for s in SHAPES
    ]
    optimizer.build(variables)
    grads = [tf.constant(rng.randn(*s).astype("float32")) for s in SHAPES]
    function, args = xla_update.compiled_update(
        optimizer, grads, variables, tf.constant(1e-3)
    )
    return function.experimental_get_compiler_ir(*args)(stage="optimized_hlo")


def test_adan_update_copies_no_state_buffer():
    """Before `ops.xla_hints.after`, XLA copied every `prev_grad` (read by
    `v` and `n`, then overwritten with the gradient) before writing it."""
    hlo = optimized_hlo(Adan(learning_rate=1e-3, weight_decay=0.02))
    entry = hlo[hlo.index("\nENTRY") :]
    assert re.findall(r"= f32\[[0-9,]+\]\{[0-9,]*\} copy\(", entry) == []


def test_after_acts_only_while_traced_for_xla():
    value = tf.constant([-0.0, 0.0, 1.5, -np.inf, np.nan])
    dependency = tf.constant([[np.nan, 1.0]])
    assert after(value, dependency) is value
    with xla_hints.xla_tracing():
        result = after(value, dependency).numpy()
    assert not xla_hints.active()
    np.testing.assert_array_equal(result, value.numpy())
    assert np.signbit(result[0]) and not np.signbit(result[1])
