"""Optimizer steps under JAX's jit write their new state in place: no state
buffer is copied to fresh memory first. Collected on the jax backend only.
"""

import re

import jax
import jax.numpy as jnp
import keras
import numpy as np

from keras_batchopt.optimizers import Adan
from keras_batchopt.optimizers import Lamb
from keras_batchopt.optimizers import Lars
from keras_batchopt.src.ops.xla_hints import after

SHAPES = [(64, 32), (3, 3, 4, 8), (32,)]


def compiled_step(optimizer, shapes=SHAPES):
    """One jitted, donated step, as Keras's JAX trainer runs it, compiled."""
    rng = np.random.RandomState(0)
    variables = [
        keras.Variable(rng.randn(*s).astype("float32")) for s in shapes
    ]
    optimizer.build(variables)
    grads = [jnp.asarray(rng.randn(*s).astype("float32")) for s in shapes]
    step = jax.jit(
        lambda tv, ov, g: optimizer.stateless_apply(ov, g, tv),
        donate_argnums=(0, 1),
    )
    trainable = [v.value for v in variables]
    state = [v.value for v in optimizer.variables]
    return step.lower(trainable, state, grads).compile()


def full_size_copies(hlo):
    """`copy` instructions of a non-scalar entry parameter."""
    entry = hlo[hlo.index("\nENTRY") :]
    return re.findall(r"= f32\[[0-9,]+\]\{[0-9,]*\} copy\(%\w+", entry)


def test_adan_step_copies_no_state_buffer():
    """Before `ops.xla_hints.after`, XLA copied every `prev_grad` (read by
    `v` and `n`, then overwritten with the gradient) to fresh memory."""
    step = compiled_step(Adan(learning_rate=1e-3, weight_decay=0.02))
    assert full_size_copies(step.as_text()) == []


def test_lars_step_keeps_no_full_size_temporary():
    """Without the barrier in `Lars.update_step`, XLA kept `g + wd * w`
    of every adapted variable in a temporary (here 168 kB), read by the
    norm and by the step."""
    optimizer = Lars(learning_rate=1.0, momentum=0.9, weight_decay=1e-4)
    step = compiled_step(optimizer, [(256, 128), (3, 3, 32, 32)])
    assert step.memory_analysis().temp_size_in_bytes < 1024


def test_lamb_step_keeps_no_full_size_temporary():
    """Before the barrier in `Lamb.update_step`, XLA kept the update `u`
    of every adapted variable in a temporary (here 300 kB), read by its
    norm and by the step; with the barrier alone, a full-size broadcast of
    each scalar that the two (256, 128) variables share (without
    `ops.xla_hints.unshared`)."""
    optimizer = Lamb(learning_rate=1e-3, weight_decay=0.01)
    step = compiled_step(optimizer, [(256, 128), (256, 128), (3, 3, 32, 32)])
    assert step.memory_analysis().temp_size_in_bytes < 4096


def test_after_returns_the_value_exactly():
    value = jnp.asarray([-0.0, 0.0, 1.5, -np.inf, np.nan], "float32")
    dependency = jnp.asarray([[np.nan, 1.0]], "float32")
    result = np.asarray(jax.jit(after)(value, dependency, jnp.ones(())))
    np.testing.assert_array_equal(result, np.asarray(value))
    assert np.signbit(result[0]) and not np.signbit(result[1])
