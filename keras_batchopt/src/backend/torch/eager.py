"""Optimizer steps that branch: run as they are on this backend."""


def call_compiled_once(fn, args, static_argnums=()):
    """`fn(*args)`: this backend's `keras.ops.cond` needs no compilation
    step of its own when it runs eagerly."""
    del static_argnums
    return fn(*args)
