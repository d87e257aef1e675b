"""GhostBatchNormalization inside a TensorFlow function whose batch
dimension is unknown when traced (as in `fit` without a fixed batch): the
padded path must equal the eager, static-shape one."""

import numpy as np
import tensorflow as tf

from keras_batchopt import layers
from tests.conftest import to_numpy


def test_ghost_bn_unknown_batch_in_a_tf_function():
    layer = layers.GhostBatchNormalization(4, momentum=0.5)
    x = np.random.default_rng(2).normal(size=(10, 3)).astype("float32")
    eager = layers.GhostBatchNormalization(4, momentum=0.5)
    expected = to_numpy(eager(x, training=True))
    layer.build((None, 3))
    call = tf.function(
        lambda v: layer(v, training=True),
        input_signature=[tf.TensorSpec((None, 3), tf.float32)],
        jit_compile=True,
    )
    np.testing.assert_allclose(to_numpy(call(x)), expected, 1e-5, 1e-5)
    np.testing.assert_allclose(
        to_numpy(layer.moving_variance),
        to_numpy(eager.moving_variance),
        1e-6,
    )
