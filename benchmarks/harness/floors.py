"""The bytes-moved floor: the cheapest pass over the same bytes.

On CPU an in-place add `a += b` over the same tensors (reads a and b,
writes a: 3 x 4 B x N). On CUDA a device-to-device copy `a <- b` (reads
b, writes a: 2 x 4 B x N), whose achieved bandwidth is the HBM figure the
table reports. Each backend has its own floor step, timed like any other
configuration.
"""

FLOOR_VARIANTS = {
    ("torch", "cpu"): "torch._foreach_add_ (in place)",
    ("jax", "cpu"): "jit a+b, donated",
    ("tensorflow", "cpu"): "XLA v.assign_add(b)",
    ("torch", "cuda"): "torch._foreach_copy_ (device copy)",
    ("jax", "cuda"): "jit copy, donated (device copy)",
    ("tensorflow", "cuda"): "XLA v.assign(b) (device copy)",
}


def floor_passes(device):
    """Passes over the N floats of the floor step: 3 on CPU, 2 on CUDA."""
    return 2 if device == "cuda" else 3


def bandwidth_gbps(nbytes, ms):
    return nbytes / (ms * 1e-3) / 1e9


def floor_step(backend, params, grads, device="cpu"):
    """The floor step over numpy arrays `params`, `grads` on `backend`."""
    return {"jax": _jax, "tensorflow": _tensorflow, "torch": _torch}[backend](
        params, grads, device == "cuda"
    )


def _jax(params, grads, copy):
    import jax
    import jax.numpy as jnp

    g = [jnp.asarray(x) for x in grads]
    state = {"a": [jnp.asarray(x) for x in params]}
    if copy:
        fn = jax.jit(lambda a, b: [y + 0 for y in b], donate_argnums=0)
    else:
        fn = jax.jit(
            lambda a, b: [x + y for x, y in zip(a, b)], donate_argnums=0
        )

    def step():
        state["a"] = fn(state["a"], g)
        jax.block_until_ready(state["a"])

    return step


def _tensorflow(params, grads, copy):
    import tensorflow as tf

    g = [tf.constant(x) for x in grads]
    a = [tf.Variable(x) for x in params]

    @tf.function(jit_compile=True)
    def add(b):
        for v, y in zip(a, b):
            v.assign(y) if copy else v.assign_add(y)

    def step():
        add(g)
        a[0][0, 0].numpy()

    return step


def _torch(params, grads, copy):
    import torch

    dev = "cuda" if copy else "cpu"
    g = [torch.from_numpy(x).to(dev) for x in grads]
    a = [torch.from_numpy(x.copy()).to(dev) for x in params]
    if copy:

        def step():
            torch._foreach_copy_(a, g)
            torch.cuda.synchronize()

    else:

        def step():
            torch._foreach_add_(a, g)

    return step
