"""Adan rows: keras_batchopt Adan next to Keras Adam and AdamW, optax,
timm and pytorch_optimizer, each run the way `fit` runs it."""

# Shared by every Adan row (Adam lr 1e-3; AdamW lr 1e-3, decay 0.02).
LR = 1e-3
BETAS = (0.98, 0.92, 0.99)
EPS = 1e-8
WEIGHT_DECAY = 0.02
OPTIMIZERS = ("adan", "adam", "adamw")


def _row(name, group, impl, opt, variant, states, **extra):
    return dict(
        name=name,
        group=group,
        framework=group,
        impl=impl,
        opt=opt,
        variant=variant,
        states=states,
        **extra,
    )


CONFIGS = [
    # JAX.
    _row(
        "jax-batchopt-adan", "jax", "keras_batchopt", "adan", "jit, donated", 4
    ),
    _row("jax-keras-adam", "jax", "keras", "adam", "jit, donated", 2),
    _row("jax-keras-adamw", "jax", "keras", "adamw", "jit, donated", 2),
    _row(
        "jax-optax-adan",
        "jax",
        "optax",
        "adan",
        "jit, donated (decoupled decay only)",
        4,
    ),
    # TensorFlow: XLA and graph mode (= fit on CPU).
    _row(
        "tf-batchopt-adan-xla", "tensorflow", "keras_batchopt", "adan", "XLA", 4
    ),
    _row(
        "tf-batchopt-adan-graph",
        "tensorflow",
        "keras_batchopt",
        "adan",
        "graph (= fit on CPU)",
        4,
    ),
    _row(
        "tf-batchopt-adan-graph-generic",
        "tensorflow",
        "keras_batchopt",
        "adan",
        "graph, generic keras.ops (disable_fast_paths())",
        4,
    ),
    _row("tf-keras-adam-xla", "tensorflow", "keras", "adam", "XLA", 2),
    _row(
        "tf-keras-adam-graph",
        "tensorflow",
        "keras",
        "adam",
        "graph (= fit on CPU)",
        2,
    ),
    _row("tf-keras-adamw-xla", "tensorflow", "keras", "adamw", "XLA", 2),
    _row(
        "tf-keras-adamw-graph",
        "tensorflow",
        "keras",
        "adamw",
        "graph (= fit on CPU)",
        2,
    ),
    # torch.
    _row(
        "torch-batchopt-adan-compiled",
        "torch",
        "keras_batchopt",
        "adan",
        "fast path, torch.compile (default; shared Inductor cache)",
        4,
    ),
    _row(
        "torch-batchopt-adan-compiled-fresh",
        "torch",
        "keras_batchopt",
        "adan",
        "fast path, torch.compile, private Inductor cache",
        4,
        inductor_cache="suite",
    ),
    _row(
        "torch-batchopt-adan-eager",
        "torch",
        "keras_batchopt",
        "adan",
        "fast path, eager (set_torch_compile(False))",
        4,
    ),
    _row(
        "torch-batchopt-adan-generic",
        "torch",
        "keras_batchopt",
        "adan",
        "generic keras.ops (disable_fast_paths())",
        4,
    ),
    _row("torch-keras-adam", "torch", "keras", "adam", "eager", 2),
    _row("torch-keras-adamw", "torch", "keras", "adamw", "eager", 2),
    _row(
        "torch-timm-adan-loop",
        "torch",
        "timm",
        "adan",
        "loop (foreach=False)",
        4,
    ),
    _row("torch-timm-adan-foreach", "torch", "timm", "adan", "foreach=True", 4),
    _row(
        "torch-pto-adan-loop",
        "torch",
        "pytorch_optimizer",
        "adan",
        "loop (foreach=False)",
        4,
    ),
    _row(
        "torch-pto-adan-foreach",
        "torch",
        "pytorch_optimizer",
        "adan",
        "foreach=True",
        4,
    ),
]
OURS = [c for c in CONFIGS if c["impl"] == "keras_batchopt"]


def keras_optimizer(keras, cfg):
    if cfg["impl"] == "keras_batchopt":
        import keras_batchopt

        return keras_batchopt.optimizers.Adan(
            learning_rate=LR,
            beta_1=BETAS[0],
            beta_2=BETAS[1],
            beta_3=BETAS[2],
            epsilon=EPS,
            weight_decay=WEIGHT_DECAY,
            no_prox=False,
        )
    if cfg["opt"] == "adam":
        return keras.optimizers.Adam(learning_rate=LR)
    return keras.optimizers.AdamW(learning_rate=LR, weight_decay=WEIGHT_DECAY)


def optax_transform(optax, cfg):
    return optax.adan(
        learning_rate=LR,
        b1=BETAS[0],
        b2=BETAS[1],
        b3=BETAS[2],
        eps=EPS,
        weight_decay=WEIGHT_DECAY,
    )


def torch_peer(cfg, ps, foreach):
    if cfg["impl"] == "timm":
        from optimizer_configs.common import import_timm_optim

        return import_timm_optim("adan").Adan(
            ps,
            lr=LR,
            betas=BETAS,
            eps=EPS,
            weight_decay=WEIGHT_DECAY,
            no_prox=False,
            foreach=foreach,
        )
    from pytorch_optimizer import Adan

    return Adan(
        ps,
        lr=LR,
        betas=BETAS,
        eps=EPS,
        weight_decay=WEIGHT_DECAY,
        weight_decouple=False,  # proximal, = no_prox=False
        foreach=foreach,
    )
