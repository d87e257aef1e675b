"""Hessian-vector products on TensorFlow: nested gradient tapes."""

import math

import keras
import tensorflow as tf
from keras import tree

from keras_batchopt.src.backend.tensorflow import distribute
from keras_batchopt.src.backend.tensorflow.sparse import densify
from keras_batchopt.src.curvature.loss_scale import hessian_optimizer
from keras_batchopt.src.curvature.loss_scale import skip_step_on_overflow
from keras_batchopt.src.curvature.model_loss import model_loss


def rademacher_probes(variables, seed, step):
    """One Rademacher tensor per variable, a function of (seed, step).

    The signs are the bits of one draw of 32-bit words, split over the
    variables in order: one random number per 32 entries instead of one
    per entry."""
    sizes = [math.prod(v.shape) for v in variables]
    total = sum(sizes)
    pair = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
    # Philox explicitly: the default algorithm differs between graph
    # mode and XLA (other probes) and is much slower under XLA.
    words = tf.random.stateless_uniform(
        (-(-total // 32),),
        seed=pair,
        minval=None,
        maxval=None,
        dtype=tf.int32,
        alg="philox",
    )
    bits = tf.bitwise.bitwise_and(
        tf.bitwise.right_shift(words[:, None], tf.range(32)), 1
    )
    signs = tf.cast(2 * tf.reshape(bits, [-1])[:total] - 1, tf.float32)
    parts = tf.split(signs, sizes)
    return [
        tf.cast(tf.reshape(part, tuple(v.shape)), v.dtype)
        for part, v in zip(parts, variables)
    ]


def _hvp(tape, grads, variables, vectors):
    """`H v` from the gradient recorded on `tape` (unconnected: zeros),
    dense (an embedding's `H v` is a `tf.IndexedSlices`)."""
    hvps = tape.gradient(
        grads,
        variables,
        output_gradients=vectors,
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    return densify(hvps)


def make_hessian_vector_product(model):
    """`hvp(x, y, sample_weight, vectors) -> (loss, hvps)` at the model's
    current weights, in inference mode."""

    @tf.function(reduce_retracing=True)
    def run(x, y, sample_weight, vectors):
        variables = model.trainable_variables
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss, _ = model_loss(model, x, y, sample_weight, training=False)
            grads = inner.gradient(
                loss, variables, unconnected_gradients="zero"
            )
            # On `outer`: it cannot differentiate a `tf.IndexedSlices`.
            grads = densify(grads)
        return loss, _hvp(outer, grads, variables, vectors)

    def hvp(x, y, sample_weight, vectors):
        vectors = [tf.convert_to_tensor(v) for v in vectors]
        return run(x, y, sample_weight, vectors)

    return hvp


def train_step(model, data):
    """Keras's TensorFlow `train_step`, plus one Hessian-vector product per
    step handed to the model's Hessian optimizer."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    optimizer = model.optimizer
    inner = hessian_optimizer(optimizer)
    with tf.GradientTape() as outer:
        with tf.GradientTape() as tape:
            loss, y_pred = model_loss(model, x, y, sample_weight, training=True)
            model._loss_tracker.update_state(
                _unscaled(loss),
                sample_weight=tf.shape(
                    next(i for i in tree.flatten(x) if i is not None)
                )[0],
            )
            loss = optimizer.scale_loss(loss)
        # After the forward pass, which builds a subclassed model.
        variables = model.trainable_weights
        # Dense on `outer` (it cannot differentiate a `tf.IndexedSlices`).
        grads = densify(tape.gradient(loss, variables))
    loss_scale = optimizer.scale_loss(1.0)

    def with_hvp():
        probes = rademacher_probes(variables, inner.seed, inner.iterations)
        hvps = _hvp(outer, grads, variables, probes)
        if isinstance(loss_scale, float) and loss_scale == 1.0:
            return hvps
        return [h / tf.cast(loss_scale, h.dtype) for h in hvps]

    def without_hvp():
        return [tf.zeros(v.shape, v.dtype) for v in variables]

    # Under XLA a conditional around the product runs its convolutions far
    # slower on the CPU (see the JAX step): then it is computed every step.
    xla_on_cpu = getattr(model, "jit_compile", False) and not (
        tf.config.list_logical_devices("GPU")
    )
    skip = inner.hessian_update_interval > 1 and not xla_on_cpu
    if not skip:
        hvps = with_hvp()
    else:
        hvps = tf.cond(inner.refreshes_hessian(), with_hvp, without_hvp)
    # Under a strategy, the replicas' products summed as the optimizer sums
    # the gradients: each replica's loss is scaled by `1 / replicas` and
    # every replica draws the same probes, so the sum is `H z` of the
    # global batch, equal on every replica (the strategy's per-copy update
    # then reads the same values whichever replica handed them over).
    hvps = distribute.all_reduce_sum(hvps)
    grads = skip_step_on_overflow(optimizer, grads, hvps)
    with inner.using_hessian(hvps, variables):
        optimizer.apply(grads, variables)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


def _unscaled(loss):
    """The loss as Keras's own step tracks it (without distribution
    scaling)."""
    from keras.src.losses import loss as loss_module

    return loss_module.unscale_loss_for_distribution(loss)
