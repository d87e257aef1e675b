"""`ops.xla_hints` on JAX: always active (every step runs under XLA)."""

import jax


def active():
    """True: JAX optimizer steps run under XLA."""
    return True


def optimization_barrier(values):
    """`values` (a tuple of arrays) through `jax.lax.optimization_barrier`."""
    return tuple(jax.lax.optimization_barrier(tuple(values)))
