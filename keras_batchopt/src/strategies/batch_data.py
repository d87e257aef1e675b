"""Building the doubled batches of the BatchFormer and ConAdv steps."""

from keras import ops
from keras import tree


def batch_size(x):
    """The number of samples of the (possibly nested) inputs `x`."""
    return ops.shape(next(t for t in tree.flatten(x) if t is not None))[0]


def stack_twice(first, second):
    """`concatenate([a, b])` along the batch axis, leaf by leaf."""
    if first is None:
        return None
    return tree.map_structure(
        lambda a, b: ops.concatenate([a, ops.cast(b, a.dtype)], 0),
        first,
        second,
    )


def doubled_weights(x, sample_weight, first, second):
    """Sample weights of a doubled batch: `first * w` for the first copy,
    `second * w` for the second (`w` = ones when `sample_weight` is None).
    """
    if sample_weight is None:
        sample_weight = ops.ones((batch_size(x),), "float32")

    def stack(w):
        w = ops.cast(w, "float32")
        return ops.concatenate([first * w, second * w], 0)

    return tree.map_structure(stack, sample_weight)


def train_step_data(args):
    """Splits a train step's arguments into `(state_args, data)`: the data
    is the last argument on every backend (JAX passes the state first)."""
    return args[:-1], args[-1]
