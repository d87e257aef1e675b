"""Every optimizer of the package under `tf.distribute.MirroredStrategy`
on 2 logical CPU devices (run by test_tensorflow_distribution.py in its
own interpreter: the logical devices are fixed before TensorFlow starts).

For each optimizer case: 20 steps of `fit` on one device and under the
strategy (global batch 16, 8 per replica). Prints one JSON line with,
per case, the error relative to one device and whether the optimizer's
TensorFlow fast path ran under the strategy.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"

import tensorflow as tf  # noqa: E402

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)

from keras_batchopt.curvature import enable_hessian_training  # noqa: E402
from keras_batchopt.src.backend.tensorflow.optimizers import xla_update  # noqa: E402
from tests.distribution import common  # noqa: E402
from tests.optimizers.contract_cases import CASES  # noqa: E402

_FAST_PATH_CALLS = []
_update_step = xla_update.update_step


def _counted_update_step(*args, **kwargs):
    _FAST_PATH_CALLS.append(1)
    return _update_step(*args, **kwargs)


xla_update.update_step = _counted_update_step


def train(case, weights, x, y):
    model = common.build_model()
    model.set_weights(weights)
    if case.needs_hessian:
        enable_hessian_training(model)
    model.compile(case.make(), "mse")
    model.fit(x, y, batch_size=common.BATCH, epochs=1, shuffle=False, verbose=0)
    return model


def main(names):
    x, y = common.data()
    weights = common.initial_weights()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    result = {"replicas": strategy.num_replicas_in_sync, "cases": {}}
    for case in CASES + common.extra_cases():
        if case.name not in (names or common.OPTIMIZER_CASES):
            continue
        reference = train(case, weights, x, y).get_weights()
        _FAST_PATH_CALLS.clear()
        with strategy.scope():
            model = train(case, weights, x, y)
        result["cases"][case.name] = {
            "error": common.relative_error(model.get_weights(), reference),
            "fast_path_calls": len(_FAST_PATH_CALLS),
        }
    result["layers"] = layers(strategy, names)
    print(json.dumps(result))


def layers(strategy, names):
    """Per batch-statistics layer: the error relative to one device after
    3 steps of `fit` (weights and moving statistics), synchronized and
    not, under the strategy (2 replicas of 8 samples each)."""
    return common.layer_errors(strategy, names)


if __name__ == "__main__":
    main(sys.argv[1:])
