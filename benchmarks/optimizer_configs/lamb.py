"""Lamb rows: keras_batchopt Lamb (run every way our Adan runs) next to
Keras's Lamb, optax, timm and pytorch_optimizer.

Keras's Lamb applies weight decay as a separate decoupled step (outside
the trust ratio); the others add it to the Adam direction. Betas
(0.9, 0.999) and epsilon are each library's default (1e-6; Keras 1e-7).
"""

from optimizer_configs import adan
from optimizer_configs.common import family
from optimizer_configs.common import import_timm_optim
from optimizer_configs.common import peer

LR = 1e-3
WEIGHT_DECAY = 0.01
OPTIMIZERS = ("lamb",)

CONFIGS = family(
    adan.OURS,
    "lamb",
    2,
    [
        peer("jax", "keras", "lamb", "", "jit, donated; decoupled decay", 2),
        peer("jax", "optax", "lamb", "", "jit, donated", 2),
        peer("tensorflow", "keras", "lamb", "-xla", "XLA; decoupled decay", 2),
        peer(
            "tensorflow",
            "keras",
            "lamb",
            "-graph",
            "graph (= fit on CPU); decoupled decay",
            2,
        ),
        peer("torch", "keras", "lamb", "", "eager; decoupled decay", 2),
        peer("torch", "timm", "lamb", "-loop", "loop (foreach=False)", 2),
        peer("torch", "timm", "lamb", "-foreach", "foreach=True", 2),
        peer(
            "torch",
            "pytorch_optimizer",
            "lamb",
            "-loop",
            "loop (foreach=False); no bias correction",
            2,
        ),
        peer(
            "torch",
            "pytorch_optimizer",
            "lamb",
            "-foreach",
            "foreach=True; no bias correction",
            2,
        ),
    ],
)


def keras_optimizer(keras, cfg):
    if cfg["impl"] == "keras_batchopt":
        import keras_batchopt

        return keras_batchopt.optimizers.Lamb(
            learning_rate=LR, weight_decay=WEIGHT_DECAY
        )
    # Keras applies the decay as a separate (decoupled) step.
    return keras.optimizers.Lamb(learning_rate=LR, weight_decay=WEIGHT_DECAY)


def optax_transform(optax, cfg):
    return optax.lamb(LR, weight_decay=WEIGHT_DECAY)


def torch_peer(cfg, ps, foreach):
    if cfg["impl"] == "timm":
        # No global gradient-norm clipping (timm clips to 1.0 by default).
        return import_timm_optim("lamb").Lamb(
            ps,
            lr=LR,
            weight_decay=WEIGHT_DECAY,
            max_grad_norm=None,
            foreach=foreach,
        )
    from pytorch_optimizer import Lamb

    # Decay added inside the trust ratio, as ours; no bias correction (the
    # paper's v3), weight norm clamped at 10.
    return Lamb(
        ps,
        lr=LR,
        weight_decay=WEIGHT_DECAY,
        weight_decouple=False,
        foreach=foreach,
    )
