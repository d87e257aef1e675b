"""A custom vector-Jacobian product, a concrete variable read and a host
callback, on JAX."""

import jax
import numpy as np


def custom_vjp(forward, backward):
    """`f(*inputs)` whose value is `forward(*inputs)[0]` and whose
    cotangents are `backward(residuals, d_output)`, one per input (None for
    an input that gets none). Every input is a JAX array; integer inputs
    must get None."""

    @jax.custom_vjp
    def f(*inputs):
        return forward(*inputs)[0]

    def f_forward(*inputs):
        output, residuals = forward(*inputs)
        return output, (residuals, inputs)

    def f_backward(saved, d_output):
        residuals, inputs = saved
        grads = backward(residuals, d_output)
        return tuple(
            jax.numpy.zeros_like(x) if g is None else g
            for g, x in zip(grads, inputs)
        )

    f.defvjp(f_forward, f_backward)
    return f


def concrete_value(variable):
    """The stored value of a Keras variable as NumPy, or None while it is
    traced or held by a trainer (inside a JAX transformation)."""
    value = variable._value
    if value is None or isinstance(value, jax.core.Tracer):
        return None
    return np.asarray(value)


def call_on_host(function, value):
    """`function(value as NumPy)` on the host when the computation runs,
    inside `jit` too (a traced variable has no value to read while it is
    traced)."""
    jax.debug.callback(lambda v: function(np.asarray(v)), value)
