"""One optimizer step, set up the way `model.fit` runs it on each backend.

- JAX: `jax.jit` over `optimizer.stateless_apply` with the trainable and
  optimizer buffers donated (`donate_argnums=(0, 1)`), as Keras's JAX
  trainer does; optax: `tx.update` + `optax.apply_updates` under the same
  jit.
- TensorFlow: `tf.function(jit_compile=True)` (XLA) or plain
  `tf.function` (graph mode, what `fit` uses on a CPU-only machine).
- torch: eager `optimizer.apply(grads, vars)` under `torch.no_grad()`, as
  Keras's torch trainer does; PyTorch optimizers run `opt.step()`.

A configuration is a dict with `framework`, `impl` (`floor`, `keras`,
`keras_batchopt`, `optax`, `timm`, `pytorch_optimizer`) and `variant`
(its words select XLA or graph, `foreach=True`, `disable_fast_paths`,
`set_torch_compile(False)`); `family` builds the optimizer
(`keras_optimizer`, `optax_transform`, `torch_peer`). Each setup returns
`(step, info)`; `step.prepare` and `step.after`, when present, run before
every step (untimed) and after the timed loop.
"""

import importlib

from harness import floors


def setup(cfg, family, params, grads, device="cpu", threads=2):
    fn = {"jax": _jax, "tensorflow": _tensorflow, "torch": _torch}
    return fn[cfg["framework"]](cfg, family, params, grads, device, threads)


def _jax(cfg, family, params, grads, device, threads):
    import jax
    import jax.numpy as jnp

    info = {}
    if cfg["impl"] == "floor":
        return floors.floor_step("jax", params, grads, device), info
    g = [jnp.asarray(x) for x in grads]
    if cfg["impl"] == "optax":
        import optax

        tx = family.optax_transform(optax, cfg)
        p = [jnp.asarray(x) for x in params]
        s = tx.init(p)

        def update(p, s, g):
            updates, s = tx.update(g, s, p)
            return optax.apply_updates(p, updates), s

        jitted = jax.jit(update, donate_argnums=(0, 1))
        state = {"p": p, "s": s}

        def step():
            state["p"], state["s"] = jitted(state["p"], state["s"], g)
            jax.block_until_ready((state["p"], state["s"]))

        if cfg["opt"] == "adan":
            info["note"] = "decoupled (AdamW-style) decay only"
        return step, info

    import keras

    variables = [keras.Variable(x, name=f"w{i}") for i, x in enumerate(params)]
    opt = family.keras_optimizer(keras, cfg)
    opt.build(variables)
    # Own copies: the donated buffers must not be shared with the Variables.
    tv = [jnp.array(v.value, copy=True) for v in variables]
    ov = [jnp.array(v.value, copy=True) for v in opt.variables]
    jitted = jax.jit(
        lambda tv, ov, g: opt.stateless_apply(ov, g, tv),
        donate_argnums=(0, 1),
    )
    state = {"tv": tv, "ov": ov}

    def step():
        state["tv"], state["ov"] = jitted(state["tv"], state["ov"], g)
        jax.block_until_ready((state["tv"], state["ov"]))

    return step, info


def _tensorflow(cfg, family, params, grads, device, threads):
    import tensorflow as tf

    # Before the first op.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    info = {}
    if cfg["impl"] == "floor":
        return floors.floor_step("tensorflow", params, grads, device), info
    xla = "XLA" in cfg["variant"]
    g = [tf.constant(x) for x in grads]

    import keras

    if "disable_fast_paths" in cfg["variant"]:
        import keras_batchopt

        keras_batchopt.config.disable_fast_paths()
    variables = [keras.Variable(x, name=f"w{i}") for i, x in enumerate(params)]
    opt = family.keras_optimizer(keras, cfg)
    opt.build(variables)
    fn = tf.function(lambda g: opt.apply(g, variables), jit_compile=xla)

    def step():
        fn(g)
        opt.iterations.numpy()  # wait for the step on the host

    return step, info


def _torch(cfg, family, params, grads, device, threads):
    import torch

    torch.set_num_threads(threads)
    info = {}
    if cfg["impl"] == "floor":
        return floors.floor_step("torch", params, grads, device), info
    dev = "cuda" if device == "cuda" else "cpu"
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    g = [torch.from_numpy(x).to(dev) for x in grads]
    if cfg["impl"] in ("timm", "pytorch_optimizer"):
        return _torch_peer(cfg, family, params, g, dev, sync), info

    import keras

    variables = [
        keras.Variable(torch.from_numpy(x.copy()).to(dev), name=f"w{i}")
        for i, x in enumerate(params)
    ]
    if cfg["impl"] == "keras_batchopt":
        import keras_batchopt

        if "disable_fast_paths" in cfg["variant"]:
            keras_batchopt.config.disable_fast_paths()
        if "set_torch_compile(False)" in cfg["variant"]:
            keras_batchopt.config.set_torch_compile(False)
        elif "auto" not in cfg["variant"]:
            # The compiled rows measure the compiled kernel from the first
            # step ("always"); the default "auto" mode reaches the same
            # kernel after its eager time budget.
            keras_batchopt.config.set_torch_compile(True)
    opt = family.keras_optimizer(keras, cfg)
    opt.build(variables)
    info["optimizer_class"] = f"{type(opt).__module__}.{type(opt).__qualname__}"

    def step():
        with torch.no_grad():
            opt.apply(g, variables)
        sync()

    if cfg["impl"] == "keras_batchopt" and hasattr(opt, "_fast_path"):
        info["fast_path"] = opt._fast_path(g, variables) is not None

    def after():
        kernel = _torch_kernel(opt)
        if kernel is not None:
            info["torch_compile_failed"] = bool(kernel._failed)

    if cfg["impl"] == "keras_batchopt":
        step.after = after
    return step, info


def _torch_peer(cfg, family, params, g, dev, sync):
    import torch

    foreach = "foreach=True" in cfg["variant"]
    ps = [
        torch.nn.Parameter(torch.from_numpy(x.copy()).to(dev)) for x in params
    ]
    for p, grad in zip(ps, g):
        p.grad = grad
    opt = family.torch_peer(cfg, ps, foreach)

    def step():
        with torch.no_grad():
            opt.step()
        sync()

    overwrites = getattr(family, "overwrites_grad", lambda cfg: False)
    if overwrites(cfg):
        # The optimizer overwrites p.grad: give each parameter its own copy
        # and restore it before every step, outside the timed call.
        own = [grad.clone() for grad in g]
        for p, grad in zip(ps, own):
            p.grad = grad

        def prepare():
            torch._foreach_copy_(own, g)

        step.prepare = prepare
    return step


def _torch_kernel(opt):
    """The `CompiledKernel` our optimizer's torch fast path runs, if any."""
    modules = getattr(opt, "_fast_path_modules", None)
    if not modules or "torch" not in modules:
        return None
    module = importlib.import_module(
        f"keras_batchopt.src.backend.torch.{modules['torch']}"
    )
    if hasattr(opt, "trust_mode"):  # Lars: one kernel per mode
        return module._kernel(
            opt.trust_mode == "sum_of_norms", bool(opt.momentum)
        )
    return module._kernel
