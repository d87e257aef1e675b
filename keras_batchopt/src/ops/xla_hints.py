"""Hints that steer XLA's buffers and fusion in an optimizer step.

They never change a number: each returns its inputs' values exactly. They
act where the backend compiles the step with XLA (the backend module
`xla_hints`: JAX always, TensorFlow inside the XLA-compiled update of
`optimizers.xla_update`) and are the identity elsewhere (torch, plain
TensorFlow graphs, eager execution).
"""

from keras import ops

from keras_batchopt.src.backend import dispatch


def _backend():
    """The backend's `xla_hints` module when it is active, else None."""
    module = dispatch.backend_module("xla_hints", required=False)
    if module is None or not module.active():
        return None
    return module


def active():
    """True where the hints act: the step is being compiled by XLA.

    Code that recomputes a value for the hints' sake (see
    `optimization_barrier`) can reuse the value instead where this is
    False, and spare the work where nothing fuses it.
    """
    return _backend() is not None


def sum_in_blocks():
    """True where a long sum of squares is cheaper in two stages under XLA
    (TensorFlow; see `ops.trust_ratio.sum_of_squares`)."""
    module = _backend()
    return module is not None and module.sum_in_blocks()


def _first_element_zero(tensor):
    """A scalar `+0.0` computed from one element of `tensor`.

    `isnan` turned into 0 or 1 and multiplied by zero is `+0.0` for every
    value (NaN and infinity included), and XLA does not fold a float
    multiplication by zero away, so the scalar stays data-dependent on
    `tensor` while reading a single element of it.
    """
    rank = len(tensor.shape)
    if rank:
        tensor = ops.slice(tensor, [0] * rank, [1] * rank)
    return ops.cast(ops.isnan(ops.sum(tensor)), "float32") * 0.0


def after(value, *dependencies):
    """Returns `value` unchanged, computed after the `dependencies`.

    An optimizer step under XLA writes each new state into the donated
    buffer of the old one. When a state is overwritten with a value that
    does not depend on the computations that still read its old contents
    (Adan's `prev_grad = g`, while `v` and `n` read `g - prev_grad`), XLA
    cannot order the write after those reads and copies the old buffer to
    fresh memory first: a full extra pass, and on JAX fresh pages every
    step.

    This makes `value` depend on one element of each of `dependencies`
    (the new states that read the old buffer), so the write comes after
    them and the copy goes away. The result is `value - 0.0` with a `+0.0`
    that no input can make anything else, so it equals `value` exactly,
    signed zeros and NaN included. It costs a few scalar operations per
    dependency.

    Args:
        value: the tensor to be written.
        *dependencies: tensors computed from the buffer `value` will
            overwrite. A tensor with a zero-size dimension is skipped.

    Returns:
        A tensor equal to `value`.
    """
    if _backend() is None:
        return value
    zero = None
    for tensor in dependencies:
        if 0 in tuple(tensor.shape):
            continue
        term = _first_element_zero(tensor)
        zero = term if zero is None else zero + term
    if zero is None:
        return value
    return value - ops.cast(zero, value.dtype)


def optimization_barrier(*values):
    """Returns `values`; XLA does not merge computations across it.

    XLA computes an expression that two consumers share once and, when it
    is too costly to repeat in each (a division, a square root), keeps it
    in a full-size temporary buffer. Repeating the expression on the
    barrier's outputs instead makes it a different computation for XLA's
    common-subexpression elimination, so each consumer fuses its own copy
    and no temporary is written and read back. (On the CPU, XLA removes
    the barrier right after that elimination, before fusion; its only
    effect is that the two copies stay apart.) Both copies are the same
    operations on the same values, so they give the same numbers.

    Args:
        *values: tensors.

    Returns:
        A tuple of tensors equal to `values`, in the same order.
    """
    module = _backend()
    if module is None:
        return tuple(values)
    return module.optimization_barrier(values)


def unshared(tensor, *scalars):
    """Returns `scalars` unchanged, each a value of `tensor`'s own.

    XLA computes a scalar's broadcast once for all the tensors of one shape
    that use the scalar (the bias corrections, the epsilon). On the CPU a
    reduction that is handed to a library kernel (YNNPACK, in recent
    jaxlib) then cannot take that shared broadcast inside and reads it
    from memory: a full-size buffer per scalar, written every step. Made
    data-dependent on one element of `tensor` (see `after`), the scalars
    are this tensor's alone and stay inside its fusion. Each result is
    `scalar - 0.0` with a `+0.0` that nothing can change, so it equals the
    scalar exactly.

    Args:
        tensor: the tensor whose computation uses the scalars; with a
            zero-size dimension the scalars are returned as they are.
        *scalars: 0-d tensors, or Python numbers (taken in `tensor`'s
            dtype).

    Returns:
        A tuple of 0-d tensors equal to `scalars`, in the same order (as
        given where the hints are not active).
    """
    if _backend() is None or 0 in tuple(tensor.shape):
        return tuple(scalars)
    zero = _first_element_zero(tensor)
    results = []
    for scalar in scalars:
        if isinstance(scalar, (int, float)):
            scalar = ops.convert_to_tensor(scalar, tensor.dtype)
        results.append(scalar - ops.cast(zero, scalar.dtype))
    return tuple(results)
