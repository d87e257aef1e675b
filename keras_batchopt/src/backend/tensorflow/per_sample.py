"""Per-sample gradients on TensorFlow: ``tf.vectorized_map`` of a tape."""

import tensorflow as tf


def compile_statistics(sample_loss, statistics):
    """``f(wrt, constants, x, y) -> statistics(gradients, aux)``.

    ``sample_loss(wrt, constants, x_i, y_i)`` gives one sample's loss and
    an auxiliary output; ``gradients`` are its per-sample gradients with
    respect to the list ``wrt``, ``aux`` the auxiliary outputs, batched.
    `vectorized_map` turns the per-sample tape into batched operations (it
    falls back to a loop for the few kernels it cannot vectorize, such as
    a convolution's filter gradient).
    """

    @tf.function(reduce_retracing=True)
    def run(wrt, constants, x, y):
        def one(args):
            x_i, y_i = args
            with tf.GradientTape() as tape:
                tape.watch(wrt)
                loss, aux = sample_loss(wrt, constants, x_i, y_i)
            gradients = tape.gradient(
                loss,
                wrt,
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            return gradients, aux

        return statistics(*tf.vectorized_map(one, (x, y)))

    return run
