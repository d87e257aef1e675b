"""Adan against the torch peers (collected on the torch backend only).

pytorch_optimizer.Adan (4.1.0) and timm.optim.Adan (timm 1.0.31) are both
bit-equal to the official `adan.py` of https://github.com/sail-sg/Adan at
commit 2c65beaf400775753b155da4082c3819fea689b9 (10 float32 steps on
`RandomState(0)` data, lr 0.01, default betas, without decay and with
either decay form), so each is an independent oracle. timm's Adan has no
max_grad_norm.
"""

import pytest

from keras_batchopt.optimizers import Adan
from tests.optimizers.oracle_harness import assert_trajectories_close
from tests.optimizers.oracle_harness import run_torch_peer
from tests.optimizers.test_adan import CONFIGS
from tests.optimizers.test_adan import STEPS
from tests.optimizers.test_adan import gradient_sequence
from tests.optimizers.test_adan import initial_params
from tests.optimizers.test_adan import run_keras


def _peers():
    from pytorch_optimizer import Adan as PyoptAdan

    from tests.peers import timm_optimizer

    def pyopt(no_prox, max_grad_norm):
        return PyoptAdan, dict(
            weight_decouple=no_prox,
            max_grad_norm=max_grad_norm,
            foreach=False,
        )

    def timm(no_prox, max_grad_norm):
        if max_grad_norm:
            return None  # timm's Adan has no max_grad_norm
        return timm_optimizer("adan", "Adan"), dict(
            no_prox=no_prox, foreach=False
        )

    return {"pytorch_optimizer": pyopt, "timm": timm}


TORCH_PEER_CASES = [
    (peer, cfg)
    for peer in ("pytorch_optimizer", "timm")
    for cfg in (
        "defaults",
        "prox_decay",
        "no_prox_decay",
        "clipping",
        "clip_and_decay",
        "other_betas",
    )
    if not (peer == "timm" and "clip" in cfg)
]


@pytest.mark.parametrize("peer,name", TORCH_PEER_CASES)
def test_matches_torch_peer(peer, name):
    config = dict(CONFIGS[name])
    lr = config.pop("learning_rate")
    peer_cls, peer_kwargs = _peers()[peer](
        config.get("no_prox", False), config.get("max_grad_norm", 0.0)
    )
    betas = (
        config.get("beta_1", 0.98),
        config.get("beta_2", 0.92),
        config.get("beta_3", 0.99),
    )
    peer_kwargs.update(
        betas=betas,
        eps=config.get("epsilon", 1e-8),
        weight_decay=config.get("weight_decay", 0.0),
    )
    grads_seq = gradient_sequence(STEPS, scale=3.0 if "clip" in name else 1.0)
    oracle = run_torch_peer(
        lambda params: peer_cls(params, lr=lr, **peer_kwargs),
        initial_params(),
        grads_seq,
    )
    ours, _ = run_keras(Adan(learning_rate=lr, **config), grads_seq)
    assert_trajectories_close(ours, oracle)
