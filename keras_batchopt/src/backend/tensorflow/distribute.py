"""Cross-replica sums under a `tf.distribute` strategy.

The other backends have no such module: on JAX, `keras.distribution`
hands a jitted step the global batch as one sharded array, so a reduction
over the batch axis is already over every replica's samples (XLA inserts
the collective); torch has no Keras distribution.
"""

import tensorflow as tf


def replicas():
    """The number of replicas in sync, in a replica context (1 without a
    strategy, and in cross-replica context)."""
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def has_strategy():
    """Whether a `tf.distribute` strategy other than the default is in use."""
    return tf.distribute.has_strategy()


def update_without_strategy(optimizer, grads, variables, learning_rate):
    """Keras's TensorFlow update without a strategy, less its all-reduce.

    Keras's `_backend_update_step` sums the gradients over the replicas
    also when there is one, through `ReplicaContext.all_reduce`, a
    `tf.custom_gradient`. Traced in a graph, that registers a gradient
    function in TensorFlow's global gradient registry that is never
    removed and whose closure holds the traced step's tensors, so every
    model trained in the process stays in memory, its whole traced
    training step with it (TensorFlow issue 97697, TensorFlow 2.21). With
    one replica the sum is the identity: this runs the same per-variable
    `update_step` on the same `tf.Variable`s, without it."""
    for grad, variable in zip(grads, variables):
        optimizer.update_step(
            grad, getattr(variable, "value", variable), learning_rate
        )


def all_reduce_sum(values):
    """The sum over the replicas of each tensor of the list `values`, in
    a replica context of a strategy with more than one replica; `values`
    unchanged otherwise (no strategy, or cross-replica context)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    return context.all_reduce(tf.distribute.ReduceOp.SUM, values)


def all_gather(values):
    """Each tensor of the list `values` of every replica, concatenated on
    axis 0 in replica order (in a replica context; see `all_reduce_sum`)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return values
    return [context.all_gather(v, axis=0) for v in values]


def transformed_update_step(optimizer, grads, variables, learning_rate):
    """Keras's TensorFlow update under a strategy, with the optimizer's
    whole-step `_transform_gradients` on the all-reduced gradients.

    Keras's `_backend_update_step` all-reduces the gradients itself, after
    any transform run before it: a global-norm clip (Adan's
    `max_grad_norm`) or AdaGradNorm's global accumulator would then see
    one replica's gradients. Here the sum comes first, then the
    transform, then Keras's per-variable distributed update (its
    `_distributed_tf_update_step`, as Keras calls it)."""
    variables = [getattr(v, "value", v) for v in variables]
    grads = all_reduce_sum(list(grads))
    grads = optimizer._transform_gradients(grads, variables)
    tf.__internal__.distribute.interim.maybe_merge_call(
        optimizer._distributed_tf_update_step,
        optimizer._distribution_strategy,
        list(zip(grads, variables)),
        learning_rate,
    )
