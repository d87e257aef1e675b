"""SGD-SaI, SinkGD and AdaGrad-Norm rows: keras_batchopt `SGDSaI`,
`SinkGD` (`num_iterations` 5 and 1) and `AdaGradNorm` (its default global
accumulator) next to Keras `SGD(momentum=0.9)` and `AdamW`, and on torch
`pytorch_optimizer.SGDSaI` (loop and foreach). No peer library implements
AdaGrad-Norm."""

SGD_LR, MOMENTUM = 0.01, 0.9
ADAMW_LR, WEIGHT_DECAY = 1e-3, 0.01
SAI_LR = 0.01
SINK_LR = 1e-3
ADAGRAD_NORM_LR = 0.01

# (backend, impl, opt, variant)
CONFIGS = [
    ("torch", "floor", "floor", "torch._foreach_add_ (in place)"),
    ("jax", "floor", "floor", "jit a+b, donated"),
    ("jax", "keras", "sgd", "jit, donated"),
    ("jax", "keras", "adamw", "jit, donated"),
    ("jax", "keras_batchopt", "sgdsai", "jit, donated"),
    ("jax", "keras_batchopt", "sinkgd5", "jit, donated"),
    ("jax", "keras_batchopt", "sinkgd1", "jit, donated"),
    ("jax", "keras_batchopt", "adagradnorm", "jit, donated"),
    ("tensorflow", "floor", "floor", "XLA v.assign_add(b)"),
]
for _opt_impl in (
    ("keras", "sgd"),
    ("keras", "adamw"),
    ("keras_batchopt", "sgdsai"),
    ("keras_batchopt", "sinkgd5"),
    ("keras_batchopt", "sinkgd1"),
    ("keras_batchopt", "adagradnorm"),
):
    CONFIGS.append(("tensorflow", *_opt_impl, "XLA"))
    CONFIGS.append(("tensorflow", *_opt_impl, "graph (= fit on CPU)"))
CONFIGS += [
    ("torch", "keras", "sgd", "eager"),
    ("torch", "keras", "adamw", "eager"),
    ("torch", "keras_batchopt", "sgdsai", "eager (torch fast path)"),
    ("torch", "keras_batchopt", "sinkgd5", "eager (torch fast path)"),
    ("torch", "keras_batchopt", "sinkgd1", "eager (torch fast path)"),
    ("torch", "keras_batchopt", "adagradnorm", "eager (generic keras.ops)"),
    ("torch", "pytorch_optimizer", "sgdsai", "loop (foreach=False)"),
    ("torch", "pytorch_optimizer", "sgdsai", "foreach=True"),
]


def as_dict(cfg):
    """The harness's configuration dict of a `CONFIGS` tuple."""
    backend, impl, opt, variant = cfg
    return dict(framework=backend, impl=impl, opt=opt, variant=variant)


def keras_optimizer(keras, cfg):
    import keras_batchopt

    opt = cfg["opt"]
    if opt == "sgd":
        return keras.optimizers.SGD(learning_rate=SGD_LR, momentum=MOMENTUM)
    if opt == "adamw":
        return keras.optimizers.AdamW(
            learning_rate=ADAMW_LR, weight_decay=WEIGHT_DECAY
        )
    if opt == "adagradnorm":
        return keras_batchopt.optimizers.AdaGradNorm(
            learning_rate=ADAGRAD_NORM_LR
        )
    if opt == "sgdsai":
        return keras_batchopt.optimizers.SGDSaI(
            learning_rate=SAI_LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
        )
    return keras_batchopt.optimizers.SinkGD(
        learning_rate=SINK_LR,
        num_iterations=int(opt[len("sinkgd") :]),
        weight_decay=WEIGHT_DECAY,
    )


def torch_peer(cfg, ps, foreach):
    from pytorch_optimizer import SGDSaI

    return SGDSaI(
        ps,
        lr=SAI_LR,
        momentum=MOMENTUM,
        weight_decay=WEIGHT_DECAY,
        foreach=foreach,
    )
