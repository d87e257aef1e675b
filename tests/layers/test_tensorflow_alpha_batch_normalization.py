"""AlphaBatchNormalization in a TensorFlow function whose batch dimension
is unknown when traced (TensorFlow's predict function after a retrace):
a batch with one value per channel cannot raise there, and is normalized
with the source statistics alone; larger batches are alpha-BN."""

import numpy as np
import tensorflow as tf

from keras_batchopt import layers
from tests.conftest import to_numpy
from tests.references import test_time_norm_numpy as ref


def test_alpha_bn_unknown_batch_of_one_uses_the_source_statistics():
    rng = np.random.default_rng(0)
    source = [
        rng.uniform(0.5, 1.5, 3),
        rng.normal(size=3),
        rng.normal(size=3),
        rng.uniform(0.5, 2.0, 3),
    ]
    layer = layers.AlphaBatchNormalization(alpha=0.4, epsilon=1e-5)
    layer.build((None, 3))
    layer.set_weights([s.astype("float32") for s in source])
    call = tf.function(
        lambda v: layer(v),
        input_signature=[tf.TensorSpec((None, 3), tf.float32)],
    )
    gamma, beta, mean, var = source
    x1 = rng.normal(size=(1, 3)).astype("float32")
    np.testing.assert_allclose(
        to_numpy(call(x1)),
        ref.source_batch_norm(x1, mean, var, gamma, beta, 1e-5),
        rtol=1e-5,
        atol=1e-6,
    )
    x5 = rng.normal(size=(5, 3)).astype("float32")
    np.testing.assert_allclose(
        to_numpy(call(x5)),
        ref.alpha_batch_norm(x5, 0.4, mean, var, gamma, beta, 1e-5),
        rtol=1e-5,
        atol=1e-6,
    )
