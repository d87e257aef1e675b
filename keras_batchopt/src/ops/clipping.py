from keras import ops


def global_norm_clip_factor(grads, max_norm, epsilon):
    """Returns ``min(1, max_norm / (||grads||_2 + epsilon))`` as float32.

    The norm is taken over all tensors of ``grads`` together. This is the
    factor the official Adan code multiplies every gradient by; note the
    ``epsilon`` in the denominator, which ``clip_by_global_norm`` lacks.
    """
    squares = [ops.sum(ops.square(ops.cast(g, "float32"))) for g in grads]
    norm = ops.sqrt(ops.sum(ops.stack(squares)))
    return ops.minimum(1.0, max_norm / (norm + epsilon))
