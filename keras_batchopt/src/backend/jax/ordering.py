"""Where `ops.ordering.after` acts on JAX: always (every step is jitted)."""


def orders_writes():
    """True: JAX optimizer steps run under XLA, which needs the ordering."""
    return True
