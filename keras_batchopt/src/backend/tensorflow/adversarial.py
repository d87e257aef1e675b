"""Input gradients at given weights on TensorFlow (ConAdv)."""

import keras
import tensorflow as tf
from keras import tree

from keras_batchopt.src.curvature.model_loss import model_loss


def input_gradients(model, x, y, sample_weight, values):
    """`grad_x L(values; x, y)` in training mode; the layer state the
    forward pass would change is discarded."""
    inputs = tree.flatten(x)
    mapping = list(zip(model.trainable_variables, values))
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        with keras.StatelessScope(state_mapping=mapping):
            loss, _ = model_loss(model, x, y, sample_weight, training=True)
    grads = tape.gradient(
        loss, inputs, unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    return tree.pack_sequence_as(x, grads)
