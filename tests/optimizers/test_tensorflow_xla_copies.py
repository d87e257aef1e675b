"""The TensorFlow fast path's XLA update writes the new state in place: no
state buffer is copied first. Collected on the tensorflow backend only.
"""

import re

import keras
import numpy as np
import tensorflow as tf

from keras_batchopt.optimizers import AdaGradNorm
from keras_batchopt.optimizers import Adan
from keras_batchopt.optimizers import Lamb
from keras_batchopt.src.backend.tensorflow import xla_hints
from keras_batchopt.src.backend.tensorflow.optimizers import xla_update
from keras_batchopt.src.ops.xla_hints import after

SHAPES = [(64, 32), (3, 3, 4, 8), (32,)]


def optimized_hlo(optimizer, shapes=SHAPES):
    """The optimized HLO of the fast path's compiled update."""
    rng = np.random.RandomState(0)
    variables = [
        keras.Variable(rng.randn(*s).astype("float32")) for s in shapes
    ]
    optimizer.build(variables)
    grads = [tf.constant(rng.randn(*s).astype("float32")) for s in shapes]
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


def full_size_temporaries(hlo, min_size):
    """Entry instructions of `min_size` elements or more that are neither
    parameters nor outputs: buffers written and read back within a step."""
    entry = hlo[hlo.index("\nENTRY") :]
    root = entry[entry.index("ROOT") :]
    defined = re.findall(r"\n\s*%([\w.-]+) = f32\[([0-9,]+)\]\S* (\w+)", entry)
    found = []
    for name, dims, op in defined:
        size = np.prod([int(d) for d in dims.split(",")])
        in_root = re.search(rf"%{re.escape(name)}(?![\w.-])", root)
        if op != "parameter" and size >= min_size and not in_root:
            found.append(name)
    return found


def test_lamb_update_keeps_no_full_size_temporary():
    """Before the barrier in `Lamb.update_step`, XLA wrote the update `u`
    of each matrix to a temporary read by its norm and by the step; before
    `ops.trust_ratio.sum_of_squares` summed in blocks, the squares of `w`
    and `u` went to temporaries too (XLA's windowed sum)."""
    hlo = optimized_hlo(Lamb(learning_rate=1e-3, weight_decay=0.01))
    assert full_size_temporaries(hlo, 64 * 32) == []


def test_adagrad_norm_update_keeps_no_full_size_temporary():
    """Before `sum_of_squares` summed in blocks, XLA wrote the squared
    gradient of each matrix to a temporary for the norm."""
    for accumulator in ("per_variable", "global"):
        optimizer = AdaGradNorm(learning_rate=0.1, accumulator=accumulator)
        hlo = optimized_hlo(optimizer)
        assert full_size_temporaries(hlo, 64 * 32) == [], accumulator


def test_after_acts_only_while_traced_for_xla():
    value = tf.constant([-0.0, 0.0, 1.5, -np.inf, np.nan])
    dependency = tf.constant([[np.nan, 1.0]])
    assert after(value, dependency) is value
    with xla_hints.xla_tracing():
        result = after(value, dependency).numpy()
    assert not xla_hints.active()
    np.testing.assert_array_equal(result, value.numpy())
    assert np.signbit(result[0]) and not np.signbit(result[1])
