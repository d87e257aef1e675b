"""`ops.xla_hints` on JAX: always active (every step runs under XLA)."""

import jax


def active():
    """True: JAX optimizer steps run under XLA."""
    return True


def sum_in_blocks():
    """False: jaxlib's XLA:CPU hands a whole sum of squares to YNNPACK in
    one fused pass; the two-stage form is slower there."""
    return False


def optimization_barrier(values):
    """`values` (a tuple of arrays) through `jax.lax.optimization_barrier`."""
    return tuple(jax.lax.optimization_barrier(tuple(values)))
