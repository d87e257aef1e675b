"""Optimizer steps run eagerly on JAX (`optimizer.apply` outside `fit`).

Eagerly, `jax.lax.cond` traces and compiles its branches anew at every
call; a step that branches would compile at every step.
`call_compiled_once` compiles such a function once per input shape
instead (the same computation).
"""

import functools

import jax


def is_traced(x):
    """Whether `x` is traced (inside `jit`, as in `fit`), not concrete."""
    return isinstance(x, jax.core.Tracer)


@functools.cache
def jitted(fn, static_argnums=()):
    """`jax.jit(fn)`, made once per function."""
    return jax.jit(fn, static_argnums=static_argnums)


def call_compiled_once(fn, args, static_argnums=()):
    """`fn(*args)`, through `jitted(fn)` when the first argument (the
    predicate of the `cond` in `fn`) is concrete; traced, `fn` is part of
    the enclosing compiled function and runs as it is."""
    if is_traced(args[0]):
        return fn(*args)
    return jitted(fn, static_argnums)(*args)
