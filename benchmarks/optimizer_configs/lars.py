"""Lars rows: keras_batchopt Lars (run every way our Adan runs) next to
optax, timm and pytorch_optimizer (Keras has no LARS).

Tensors of rank <= 1 take no trust ratio in ours (the default), optax
(masked) and pytorch_optimizer; timm adapts every tensor. Trust
coefficient 1e-3, every library's default.
"""

from optimizer_configs import adan
from optimizer_configs.common import family
from optimizer_configs.common import import_timm_optim
from optimizer_configs.common import peer

LR = 1.0
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
OPTIMIZERS = ("lars",)

CONFIGS = family(
    adan.OURS,
    "lars",
    1,
    [
        peer(
            "jax",
            "optax",
            "lars",
            "",
            "jit, donated; rank<=1 masked (ratio, decay)",
            1,
        ),
        peer(
            "torch",
            "timm",
            "lars",
            "-loop",
            "loop (foreach=False); adapts every tensor",
            1,
        ),
        peer(
            "torch",
            "timm",
            "lars",
            "-foreach",
            "foreach=True; adapts every tensor",
            1,
        ),
        peer(
            "torch",
            "pytorch_optimizer",
            "lars",
            "-loop",
            "loop (foreach=False); p.grad restored untimed",
            1,
        ),
        peer(
            "torch",
            "pytorch_optimizer",
            "lars",
            "-foreach",
            "foreach=True; p.grad restored untimed",
            1,
        ),
    ],
)


def keras_optimizer(keras, cfg):
    import keras_batchopt

    # Default exclusions: rank <= 1 variables take no trust ratio.
    return keras_batchopt.optimizers.Lars(
        learning_rate=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
    )


def optax_transform(optax, cfg):
    def rank_at_least_two(params):
        # Our Lars's default: rank <= 1 tensors take no trust ratio.
        return [p.ndim > 1 for p in params]

    return optax.lars(
        LR,
        weight_decay=WEIGHT_DECAY,
        weight_decay_mask=rank_at_least_two,
        trust_ratio_mask=rank_at_least_two,
        momentum=MOMENTUM,
    )


def torch_peer(cfg, ps, foreach):
    if cfg["impl"] == "timm":
        # Adapts (and decays) every tensor, since weight_decay != 0.
        return import_timm_optim("lars").Lars(
            ps,
            lr=LR,
            momentum=MOMENTUM,
            weight_decay=WEIGHT_DECAY,
            foreach=foreach,
        )
    from pytorch_optimizer import LARS

    # Tensors of rank <= 1 take neither trust ratio nor decay.
    return LARS(
        ps, lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, foreach=foreach
    )


# pytorch_optimizer's LARS overwrites p.grad (with the momentum buffer,
# among others): its rows get their own gradient copies, restored before
# every step outside the timed call.
def overwrites_grad(cfg):
    return cfg["impl"] == "pytorch_optimizer"
