from keras import ops

from keras_batchopt.src.backend import dispatch


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

    An optimizer step under XLA (JAX's jitted step, TensorFlow's compiled
    update) writes each new state into the donated buffer of the old one.
    When a state is overwritten with a value that does not depend on the
    computations that still read its old contents (Adan's `prev_grad = g`,
    while `v` and `n` read `g - prev_grad`), XLA cannot order the write
    after those reads and copies the old buffer to fresh memory first: a
    full extra pass, and on JAX fresh pages every step.

    This makes `value` depend on one element of each of `dependencies`
    (the new states that read the old buffer), so the write comes after
    them and the copy goes away. The result is `value - 0.0` with a `+0.0`
    that no input can make anything else, so it equals `value` exactly,
    signed zeros and NaN included. It costs two scalar operations per
    dependency, and nothing where the backend has no such copies (the
    backend module `ordering` says where: JAX, and TensorFlow inside an
    XLA-compiled function; elsewhere `value` is returned as it is).

    Args:
        value: the tensor to be written.
        *dependencies: tensors computed from the buffer `value` will
            overwrite. A tensor with a zero-size dimension is skipped.

    Returns:
        A tensor equal to `value`.
    """
    module = dispatch.backend_module("ordering", required=False)
    if module is None or not module.orders_writes():
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
