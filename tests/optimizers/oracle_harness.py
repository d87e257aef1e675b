"""Shared machinery of the oracle tests: inputs, runners, comparisons.

An oracle test feeds one fixed sequence of float32 gradients to our
optimizer and to an independent implementation (a NumPy reference in
tests/references or a peer library) and compares the two trajectories of
parameters after every step.
"""

import keras
import numpy as np
import pytest

from tests.conftest import to_numpy

RTOL = 1e-5
ATOL = 1e-6


def gradient_sequence(shapes, steps, seed=0, scale=1.0):
    rng = np.random.RandomState(seed)
    return [
        [(rng.randn(*s) * scale).astype("float32") for s in shapes]
        for _ in range(steps)
    ]


def initial_params(shapes, seed=1, zero=()):
    """Random float32 parameters; the indices in `zero` start at zero."""
    rng = np.random.RandomState(seed)
    params = [rng.randn(*s).astype("float32") for s in shapes]
    for i in zero:
        params[i] = np.zeros_like(params[i])
    return params


def run_keras(optimizer, grads_seq, params, lr_fn=None):
    """Our optimizer on variables named w0, w1, ...; returns the trajectory
    and the variables."""
    variables = [keras.Variable(p, name=f"w{i}") for i, p in enumerate(params)]
    trajectory = []
    for step, grads in enumerate(grads_seq):
        if lr_fn is not None:
            optimizer.learning_rate = lr_fn(step)
        optimizer.apply(
            [keras.ops.convert_to_tensor(g) for g in grads], variables
        )
        trajectory.append([to_numpy(v) for v in variables])
    return trajectory, variables


def run_numpy(reference, grads_seq, lr_fn):
    """A reference object with `step(grads, lr)` and `params`."""
    trajectory = []
    for step, grads in enumerate(grads_seq):
        reference.step(grads, lr_fn(step))
        trajectory.append([p.copy() for p in reference.params])
    return trajectory


def run_optax(transform, params, grads_seq):
    """An optax GradientTransformation in float32 JAX (any Keras backend)."""
    import jax
    import jax.numpy as jnp
    import optax

    params = [jnp.asarray(p) for p in params]
    state = transform.init(params)

    @jax.jit
    def step(params, state, grads):
        updates, state = transform.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    trajectory = []
    for grads in grads_seq:
        params, state = step(params, state, [jnp.asarray(g) for g in grads])
        trajectory.append([np.asarray(p) for p in params])
    return trajectory


def run_torch_peer(make_optimizer, params, grads_seq, lr_fn=None):
    """A torch.optim-style peer; `make_optimizer(torch_params)`."""
    import torch

    tensors = [torch.nn.Parameter(torch.tensor(p)) for p in params]
    peer = make_optimizer(tensors)
    trajectory = []
    for step, grads in enumerate(grads_seq):
        if lr_fn is not None:
            for group in peer.param_groups:
                group["lr"] = lr_fn(step)
        for p, g in zip(tensors, grads):
            p.grad = torch.tensor(g)
        peer.step()
        trajectory.append([p.detach().numpy().copy() for p in tensors])
    return trajectory


def max_rel_error(ours, oracle, rtol=RTOL, atol=ATOL):
    """The worst |a - b| / (atol + rtol |b|) over all steps (<= 1 passes)."""
    worst = 0.0
    for step_ours, step_oracle in zip(ours, oracle):
        for a, b in zip(step_ours, step_oracle):
            err = np.abs(a - b) / (atol + rtol * np.abs(b))
            worst = max(worst, float(np.max(err)))
    return worst


def assert_trajectories_close(ours, oracle, rtol=RTOL, atol=ATOL):
    assert len(ours) == len(oracle)
    for step, (step_ours, step_oracle) in enumerate(zip(ours, oracle)):
        for i, (a, b) in enumerate(zip(step_ours, step_oracle)):
            np.testing.assert_allclose(
                a,
                b,
                rtol=rtol,
                atol=atol,
                err_msg=f"step {step + 1}, variable w{i}",
            )


def assert_clear_error(cls, kwargs, name, fragment):
    """`cls(**kwargs)` raises a ValueError that names the argument, says
    what is allowed (`fragment`) and shows the value received."""
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    message = str(info.value)
    assert f"`{name}`" in message
    assert f"Received: {name}=" in message
    assert fragment in message


def name_masks(names, count):
    """True for the variables w0..w{count-1} not named in `names`."""
    return [f"w{i}" not in names for i in range(count)]


def constant(lr):
    """A learning-rate function of the step that returns `lr`."""
    return lambda step: lr
