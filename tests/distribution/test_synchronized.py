"""`synchronized` of the batch-statistics layers, on every backend, in
this process (one device): the argument's checks, its config round trip,
and that with one replica it changes nothing. The multi-replica
behaviour is in test_tensorflow_distribution.py and
test_jax_distribution.py."""

import keras
import numpy as np
import pytest

from keras_batchopt import layers
from tests.distribution import common

NAMES = list(common.layer_factories(False))
TORCH = keras.backend.backend() == "torch"


@pytest.mark.parametrize("name", NAMES)
def test_config_round_trip(name):
    layer = common.layer_factories(not TORCH)[name]()
    config = layer.get_config()
    assert config["synchronized"] is (not TORCH)
    clone = type(layer).from_config(config)
    assert clone.synchronized is (not TORCH)
    assert clone.get_config() == config


@pytest.mark.parametrize("name", NAMES)
def test_one_replica_is_unchanged(name):
    """On torch, `synchronized=True` raises, naming the argument."""
    if TORCH:
        with pytest.raises(ValueError, match="synchronized=True"):
            common.layer_factories(True)[name]()
        return
    x, _ = common.layer_data()
    x = x[: common.BATCH]
    outputs = []
    for synchronized in (True, False):
        keras.utils.set_random_seed(0)
        layer = common.layer_factories(synchronized)[name]()
        y = layer(x, training=True)
        outputs.append(
            [keras.ops.convert_to_numpy(y)]
            + [keras.ops.convert_to_numpy(w) for w in layer.weights]
        )
    for a, b in zip(*outputs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "cls", [layers.GhostBatchNormalization, layers.RegionNormalization]
)
def test_not_a_bool(cls):
    args = (4,) if cls is layers.GhostBatchNormalization else ()
    with pytest.raises(ValueError, match="synchronized=1"):
        cls(*args, synchronized=1)
