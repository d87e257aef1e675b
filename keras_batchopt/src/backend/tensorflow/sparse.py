"""Dense gradients for TensorFlow's sparse ones."""

import tensorflow as tf


def densify(values):
    """`values` as a list, each `tf.IndexedSlices` made a dense tensor.

    An embedding lookup (a gather) gives its table a `tf.IndexedSlices`
    gradient. `tf.convert_to_tensor` scatters it into a dense tensor of the
    table's shape, summing repeated rows (differentiable, and XLA-friendly);
    `keras.ops.convert_to_tensor` would return it unchanged. Other values,
    `None` included, pass as they are.
    """
    return [
        tf.convert_to_tensor(v) if isinstance(v, tf.IndexedSlices) else v
        for v in values
    ]
