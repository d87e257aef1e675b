"""Shared checks for the layer tests: layouts, autograd against finite
differences, and save/load."""

import contextlib

import numpy as np
from keras import ops

from tests.conftest import BACKEND
from tests.conftest import to_numpy

LAYOUTS = ("channels_last", "channels_first")


def to_layout(x_nchw, layout):
    """An NCHW (or NC...) array in the layout under test."""
    if layout == "channels_first":
        return x_nchw
    return np.moveaxis(x_nchw, 1, -1)


def from_layout(x, layout):
    if layout == "channels_first":
        return x
    return np.moveaxis(x, -1, 1)


def axis_of(layout):
    return 1 if layout == "channels_first" else -1


def autograd(fn, value, weights):
    """d/dvalue of sum(fn(value) * weights), by the backend's autograd."""
    value = ops.convert_to_tensor(value)
    weights = ops.convert_to_tensor(weights)
    if BACKEND == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: (fn(v) * weights).sum())(value))
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(value)
            loss = tf.reduce_sum(fn(value) * weights)
        return tape.gradient(loss, value).numpy()

    value = value.detach().clone().requires_grad_(True)
    (fn(value) * weights).sum().backward()
    return value.grad.detach().cpu().numpy()


def finite_differences(fn, value, weights, coordinates, step=1e-6):
    """Central differences of sum(fn(value) * weights) at a few
    coordinates (float64)."""
    grads = []
    for index in coordinates:
        plus, minus = value.copy(), value.copy()
        plus[index] += step
        minus[index] -= step
        difference = (to_numpy(fn(plus)) * weights).sum() - (
            to_numpy(fn(minus)) * weights
        ).sum()
        grads.append(difference / (2 * step))
    return np.array(grads)


def check_gradient(fn, value, seed=0, count=8):
    """The backend's gradient of `fn` at `value` equals central finite
    differences at `count` random coordinates (float64, rtol 1e-5)."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=to_numpy(fn(value)).shape)
    grad = autograd(fn, value, weights)
    flat = [
        np.unravel_index(i, value.shape)
        for i in rng.choice(value.size, count, replace=False)
    ]
    numeric = finite_differences(fn, value, weights, flat)
    analytic = np.array([grad[i] for i in flat])
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)
    # A gradient that is zero everywhere would pass trivially.
    assert np.abs(numeric).max() > 1e-3


@contextlib.contextmanager
def float64():
    """Float64 computations for finite differences (JAX needs x64 on)."""
    if BACKEND != "jax":
        yield
        return
    import jax

    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)
