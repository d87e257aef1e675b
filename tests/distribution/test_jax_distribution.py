"""keras.distribution on JAX, 8 virtual CPU devices (see jax_worker.py).

Every optimizer gives the weights of one device after 20 steps under
`DataParallel` and under `ModelParallel` with the convolution and Dense
kernels sharded over a 2x4 mesh; its slots have their variable's
sharding. Equal weights with sharded kernels are the check that LAMB's
and LARS's trust ratios, AdaGradNorm's accumulator, SinkGD's row and
column normalisation and AdaHessian's spatial average are taken over the
whole variable: a norm of one shard would give other weights. (No
layout can make them wrong: a jitted step sees each sharded variable as
one global array and XLA adds the collectives, so there is no layout to
refuse with an error.)

The batch-statistics layers under `DataParallel` on 2 devices (half the
batch each) equal one device with the whole batch, synchronized or not:
the step reduces over the global batch, in the custom backward passes of
PowerNorm and UnifiedNorm (`jax.custom_vjp`) too.

The worker runs once for the file, in the JAX lane only (tests/conftest.py
collects files named after a backend on that backend only).
"""

import pytest

from tests.distribution import common
from tests.distribution.worker_run import run_worker

RTOL = 1e-5
# AdaHessian's Hessian-vector product is a sum over the batch of terms of
# both signs: its rounding differs with the order of the reduction. One
# device with and without XLA already differ by 7.9e-6 after these 20
# steps (the convolution's bias; 9.8e-6 under DataParallel): 3x that.
ADA_HESSIAN_RTOL = 3e-5


@pytest.fixture(scope="module")
def result():
    return run_worker("tests.distribution.jax_worker")


def test_eight_devices(result):
    assert result["devices"] == 8
    assert sorted(result["cases"]) == sorted(common.OPTIMIZER_CASES)


@pytest.mark.parametrize("name", common.OPTIMIZER_CASES)
@pytest.mark.parametrize("distribution", ["data_parallel", "model_parallel"])
def test_optimizer_matches_one_device(result, name, distribution):
    entry = result["cases"][name][distribution]
    rtol = ADA_HESSIAN_RTOL if name.startswith("ada_hessian") else RTOL
    assert entry["error"] <= rtol, entry["error"]


@pytest.mark.parametrize("name", common.OPTIMIZER_CASES)
def test_slots_are_sharded_like_their_variable(result, name):
    sharding = result["cases"][name]["model_parallel"]["sharding"]
    kernels = ["conv/kernel", "dense_1/kernel", "dense_2/kernel"]
    assert all(sharding[k]["sharded"] for k in kernels)
    assert all(entry["same"] for entry in sharding.values()), sharding
    # Every optimizer but AdaGradNorm (one scalar accumulator by default)
    # keeps a full-size slot for some variable here.
    slots = sum(entry["slots"] for entry in sharding.values())
    assert (slots == 0) == (name == "adagrad_norm"), slots


@pytest.mark.parametrize("name", common.layer_cases())
def test_layer_two_replicas_match_one(result, name):
    entry = result["layers"][name]
    assert entry["synchronized"] <= RTOL, entry
    assert entry["local"] <= RTOL, entry
