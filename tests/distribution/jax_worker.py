"""Every optimizer of the package under `keras.distribution` on 8 virtual
CPU devices (run by test_jax_distribution.py in its own interpreter).

For each optimizer case: 20 steps of `fit` on one device, under
`DataParallel` over the 8 devices, and under `ModelParallel` on a 2x4
mesh ("batch", "model") whose LayoutMap shards the convolution's output
channels and both Dense kernels' columns over "model". Prints one JSON
line: per case and distribution, the error relative to one device, and
whether every optimizer slot has the sharding of its variable.
"""

import json
import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "")
    + " --xla_force_host_platform_device_count=8"
)

import jax  # noqa: E402
import keras  # noqa: E402

from keras_batchopt.curvature import enable_hessian_training  # noqa: E402
from tests.distribution import common  # noqa: E402
from tests.optimizers.contract_cases import CASES  # noqa: E402


def distributions():
    devices = jax.devices()
    mesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"], devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["conv/kernel"] = (None, None, None, "model")
    layout_map["dense.*/kernel"] = (None, "model")
    return {
        "data_parallel": keras.distribution.DataParallel(devices=devices),
        "model_parallel": keras.distribution.ModelParallel(
            layout_map=layout_map, batch_dim_name="batch"
        ),
    }


def slots_of(optimizer, variable):
    prefix = variable.path.replace("/", "_") + "_"
    return [
        s
        for s in optimizer.variables
        if s.path.split("/")[-1].startswith(prefix)
        and tuple(s.shape) == tuple(variable.shape)
    ]


def sharding_report(model, optimizer):
    """Per variable: whether it is sharded, how many slots it has and
    whether every slot has the variable's sharding."""
    out = {}
    for v in model.trainable_variables:
        sharding = v.value.sharding
        slots = slots_of(optimizer, v)
        out[v.path] = {
            "sharded": not sharding.is_fully_replicated,
            "slots": len(slots),
            "same": all(
                s.value.sharding.is_equivalent_to(sharding, len(v.shape))
                for s in slots
            ),
        }
    return out


def train(case, weights, x, y):
    model = common.build_model()
    model.set_weights(weights)
    if case.needs_hessian:
        enable_hessian_training(model)
    optimizer = case.make()
    model.compile(optimizer, "mse", jit_compile=True)
    model.fit(x, y, batch_size=common.BATCH, epochs=1, shuffle=False, verbose=0)
    return model, optimizer


def main(names):
    x, y = common.data()
    weights = common.initial_weights()
    result = {"devices": len(jax.devices()), "cases": {}}
    for case in CASES + common.extra_cases():
        if case.name not in (names or common.OPTIMIZER_CASES):
            continue
        model, _ = train(case, weights, x, y)
        reference = model.get_weights()
        entry = {}
        for label, distribution in distributions().items():
            with distribution.scope():
                model, optimizer = train(case, weights, x, y)
            entry[label] = {
                "error": common.relative_error(model.get_weights(), reference),
                "sharding": sharding_report(model, optimizer),
            }
        result["cases"][case.name] = entry
    result["layers"] = layers(names)
    print(json.dumps(result))


def layers(names):
    """Per batch-statistics layer: the error relative to one device after
    3 steps of `fit` (weights and moving statistics) under `DataParallel`
    on 2 devices (8 samples each), synchronized and not: a jitted step
    takes the global batch as one array sharded over the devices, so
    both reduce over the whole batch."""
    distribution = keras.distribution.DataParallel(devices=jax.devices()[:2])
    return common.layer_errors(distribution, names)


if __name__ == "__main__":
    main(sys.argv[1:])
