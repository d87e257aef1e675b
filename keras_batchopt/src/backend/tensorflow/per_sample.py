"""Per-sample gradients on TensorFlow: ``tf.vectorized_map`` of a tape."""

import tensorflow as tf


def compile_statistics(sample_loss, statistics):
    """``f(trainable, non_trainable, x, y) -> statistics(per-sample grads)``.

    ``sample_loss(trainable, non_trainable, x_i, y_i)`` is one sample's loss.
    `vectorized_map` turns the per-sample tape into batched operations (it
    falls back to a loop for the few kernels it cannot vectorize, such as
    a convolution's filter gradient).
    """

    @tf.function(reduce_retracing=True)
    def run(trainable, non_trainable, x, y):
        def one(args):
            x_i, y_i = args
            with tf.GradientTape() as tape:
                tape.watch(trainable)
                loss = sample_loss(trainable, non_trainable, x_i, y_i)
            return tape.gradient(
                loss,
                trainable,
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )

        return statistics(tf.vectorized_map(one, (x, y)))

    return run
