"""One optimizer step over ~10M float32 parameters, on CPU, side by side.

Times `keras_batchopt.optimizers.Adan` against Keras's Adam and AdamW,
`optax.adan`, timm's and pytorch_optimizer's Adan; `keras_batchopt`'s Lamb
against Keras's Lamb, `optax.lamb`, timm's and pytorch_optimizer's Lamb;
its Lars against `optax.lars`, timm's Lars and pytorch_optimizer's LARS;
and a memory-copy floor, each run the way `model.fit` runs it:

- JAX: `jax.jit` over `optimizer.stateless_apply` with the trainable and
  optimizer buffers donated (`donate_argnums=(0, 1)`), as Keras's JAX
  trainer does.
- TensorFlow: `tf.function(jit_compile=True)` (XLA) and plain `tf.function`
  (graph mode, what `fit` uses on a CPU-only machine, where
  `jit_compile="auto"` resolves to False).
- torch: eager `optimizer.apply(grads, vars)` under `torch.no_grad()`, as
  Keras's torch trainer does; PyTorch optimizers run `opt.step()`.

Every configuration runs in its own subprocess; the whole suite is repeated
`--repeats` times (the repeats are interleaved). The parent writes one JSON
line per configuration and run, then a markdown table.

Usage (from the repository root):

    python benchmarks/optimizer_step.py --backend all --repeats 3 \
        --steps 30 --out benchmarks/results/optimizer_step_cpu.jsonl
    python benchmarks/optimizer_step.py --backend all --repeats 3 \
        --steps 30 --only 'lamb|lars|floor' --out /tmp/lamb_lars.jsonl
    python benchmarks/optimizer_step.py \
        --table-only benchmarks/results/optimizer_step_cpu.jsonl

See benchmarks/README.md for how to read the table.
"""

import argparse
import datetime
import gc
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import types

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# 50 tensors, 10,297,344 float32 parameters (41.2 MB per copy).
SHAPES = (
    [(4096, 1024)] * 1
    + [(1024, 1024)] * 5
    + [(256, 512)] * 4
    + [(3, 3, 64, 64)] * 8
    + [(1024,)] * 20
    + [(4096,)] * 4
    + [(512,)] * 8
)


def _size(shape):
    n = 1
    for d in shape:
        n *= d
    return n


N_PARAMS = sum(_size(s) for s in SHAPES)
assert len(SHAPES) == 50 and N_PARAMS == 10_297_344

THREADS = 2

# Adan hyperparameters shared by every Adan row.
LR = 1e-3
BETAS = (0.98, 0.92, 0.99)
EPS = 1e-8
WEIGHT_DECAY = 0.02

# Lamb hyperparameters shared by every Lamb row (betas (0.9, 0.999) and
# epsilon are each library's default: 1e-6, Keras 1e-7).
LAMB_LR = 1e-3
LAMB_WEIGHT_DECAY = 0.01

# Lars hyperparameters shared by every Lars row (trust coefficient 1e-3,
# every library's default).
LARS_LR = 1.0
LARS_MOMENTUM = 0.9
LARS_WEIGHT_DECAY = 1e-4

# The reference floor: in-place `a += b` over the same tensors.
FLOOR_NAME = "floor-torch-foreach_add"


def bytes_per_step(num_states):
    """Minimal single-pass traffic of one step, in bytes.

    An optimizer with S state tensors reads the gradient and reads and
    writes the parameter and each state: (3 + 2 S) * 4 B * N. The floor
    (`a += b`) is the S = 0 case: read a, read b, write a.
    """
    return (3 + 2 * num_states) * 4 * N_PARAMS


def cpu_busy_s():
    """System-wide busy CPU seconds so far (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return float("nan")
    # user nice system idle iowait irq softirq steal guest guest_nice;
    # guest time is already counted in user/nice.
    user, nice, system, _, _, irq, softirq, steal = map(int, fields[:8])
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / hz


def own_cpu_s(who=resource.RUSAGE_SELF):
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def runqueue_wait_s():
    """Seconds this process's threads spent runnable but not running.

    Sum of the second field of /proc/self/task/*/schedstat: time a thread
    waited for a CPU. It grows when other processes (or more of our own
    threads than cores) compete for the CPUs. NaN where not available.
    """
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return float("nan")
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def foreign_load(seconds):
    """Average number of cores busy with other processes over `seconds`."""
    b0, o0, t0 = cpu_busy_s(), own_cpu_s(), time.perf_counter()
    time.sleep(seconds)
    b1, o1, t1 = cpu_busy_s(), own_cpu_s(), time.perf_counter()
    return max((b1 - b0) - (o1 - o0), 0.0) / (t1 - t0)


# ---------------------------------------------------------------------------
# Configurations. `group` is the backend selected by --backend; `framework`
# is the library the child process imports (KERAS_BACKEND for Keras rows).
# ---------------------------------------------------------------------------

CONFIGS = [
    # Floors (memory-copy reference), same bytes layout.
    dict(
        name=FLOOR_NAME,
        group="floor",
        framework="torch",
        impl="floor",
        opt="copy",
        variant="torch._foreach_add_ (in place)",
        states=0,
    ),
    dict(
        name="floor-jax-add",
        group="jax",
        framework="jax",
        impl="floor",
        opt="copy",
        variant="jit a+b, donated",
        states=0,
    ),
    dict(
        name="floor-tf-assign_add",
        group="tensorflow",
        framework="tensorflow",
        impl="floor",
        opt="copy",
        variant="XLA v.assign_add(b)",
        states=0,
    ),
    # JAX.
    dict(
        name="jax-batchopt-adan",
        group="jax",
        framework="jax",
        impl="keras_batchopt",
        opt="adan",
        variant="jit, donated",
        states=4,
    ),
    dict(
        name="jax-keras-adam",
        group="jax",
        framework="jax",
        impl="keras",
        opt="adam",
        variant="jit, donated",
        states=2,
    ),
    dict(
        name="jax-keras-adamw",
        group="jax",
        framework="jax",
        impl="keras",
        opt="adamw",
        variant="jit, donated",
        states=2,
    ),
    dict(
        name="jax-optax-adan",
        group="jax",
        framework="jax",
        impl="optax",
        opt="adan",
        variant="jit, donated (decoupled decay only)",
        states=4,
    ),
    # TensorFlow: XLA and graph mode (= fit on CPU).
    dict(
        name="tf-batchopt-adan-xla",
        group="tensorflow",
        framework="tensorflow",
        impl="keras_batchopt",
        opt="adan",
        variant="XLA",
        states=4,
    ),
    dict(
        name="tf-batchopt-adan-graph",
        group="tensorflow",
        framework="tensorflow",
        impl="keras_batchopt",
        opt="adan",
        variant="graph (= fit on CPU)",
        states=4,
    ),
    dict(
        name="tf-batchopt-adan-graph-generic",
        group="tensorflow",
        framework="tensorflow",
        impl="keras_batchopt",
        opt="adan",
        variant="graph, generic keras.ops (disable_fast_paths())",
        states=4,
    ),
    dict(
        name="tf-keras-adam-xla",
        group="tensorflow",
        framework="tensorflow",
        impl="keras",
        opt="adam",
        variant="XLA",
        states=2,
    ),
    dict(
        name="tf-keras-adam-graph",
        group="tensorflow",
        framework="tensorflow",
        impl="keras",
        opt="adam",
        variant="graph (= fit on CPU)",
        states=2,
    ),
    dict(
        name="tf-keras-adamw-xla",
        group="tensorflow",
        framework="tensorflow",
        impl="keras",
        opt="adamw",
        variant="XLA",
        states=2,
    ),
    dict(
        name="tf-keras-adamw-graph",
        group="tensorflow",
        framework="tensorflow",
        impl="keras",
        opt="adamw",
        variant="graph (= fit on CPU)",
        states=2,
    ),
    # torch.
    dict(
        name="torch-batchopt-adan-compiled",
        group="torch",
        framework="torch",
        impl="keras_batchopt",
        opt="adan",
        variant="fast path, torch.compile (default; shared Inductor cache)",
        states=4,
    ),
    dict(
        name="torch-batchopt-adan-compiled-fresh",
        group="torch",
        framework="torch",
        impl="keras_batchopt",
        opt="adan",
        variant="fast path, torch.compile, private Inductor cache",
        states=4,
        inductor_cache="suite",
    ),
    dict(
        name="torch-batchopt-adan-eager",
        group="torch",
        framework="torch",
        impl="keras_batchopt",
        opt="adan",
        variant="fast path, eager (set_torch_compile(False))",
        states=4,
    ),
    dict(
        name="torch-batchopt-adan-generic",
        group="torch",
        framework="torch",
        impl="keras_batchopt",
        opt="adan",
        variant="generic keras.ops (disable_fast_paths())",
        states=4,
    ),
    dict(
        name="torch-keras-adam",
        group="torch",
        framework="torch",
        impl="keras",
        opt="adam",
        variant="eager",
        states=2,
    ),
    dict(
        name="torch-keras-adamw",
        group="torch",
        framework="torch",
        impl="keras",
        opt="adamw",
        variant="eager",
        states=2,
    ),
    dict(
        name="torch-timm-adan-loop",
        group="torch",
        framework="torch",
        impl="timm",
        opt="adan",
        variant="loop (foreach=False)",
        states=4,
    ),
    dict(
        name="torch-timm-adan-foreach",
        group="torch",
        framework="torch",
        impl="timm",
        opt="adan",
        variant="foreach=True",
        states=4,
    ),
    dict(
        name="torch-pto-adan-loop",
        group="torch",
        framework="torch",
        impl="pytorch_optimizer",
        opt="adan",
        variant="loop (foreach=False)",
        states=4,
    ),
    dict(
        name="torch-pto-adan-foreach",
        group="torch",
        framework="torch",
        impl="pytorch_optimizer",
        opt="adan",
        variant="foreach=True",
        states=4,
    ),
]
BACKEND_ORDER = ("jax", "tensorflow", "torch")


def _peer(group, impl, opt, suffix, variant, states):
    """A peer row, named `<backend>-<impl>-<opt><suffix>` as above."""
    prefix = {"tensorflow": "tf"}.get(group, group)
    short = {"pytorch_optimizer": "pto"}.get(impl, impl)
    return dict(
        name=f"{prefix}-{short}-{opt}{suffix}",
        group=group,
        framework=group,
        impl=impl,
        opt=opt,
        variant=variant,
        states=states,
    )


def _family(opt, states, peers):
    """Our `opt` run every way our Adan is run, then its peers, by backend.

    The keras_batchopt rows copy the Adan rows' names (with `adan`
    replaced by `opt`), variants and options, so that both suites always
    run the same ways.
    """
    ours = [
        dict(c, name=c["name"].replace("-adan", f"-{opt}", 1), opt=opt)
        for c in CONFIGS
        if c["impl"] == "keras_batchopt" and c["opt"] == "adan"
    ]
    rows = []
    for group in BACKEND_ORDER:
        rows += [dict(c, states=states) for c in ours if c["group"] == group]
        rows += [c for c in peers if c["group"] == group]
    return rows


# Lamb: Keras's Lamb applies weight decay as a separate decoupled step
# (outside the trust ratio); the others add it to the Adam direction.
CONFIGS += _family(
    "lamb",
    2,
    [
        _peer("jax", "keras", "lamb", "", "jit, donated; decoupled decay", 2),
        _peer("jax", "optax", "lamb", "", "jit, donated", 2),
        _peer("tensorflow", "keras", "lamb", "-xla", "XLA; decoupled decay", 2),
        _peer(
            "tensorflow",
            "keras",
            "lamb",
            "-graph",
            "graph (= fit on CPU); decoupled decay",
            2,
        ),
        _peer("torch", "keras", "lamb", "", "eager; decoupled decay", 2),
        _peer("torch", "timm", "lamb", "-loop", "loop (foreach=False)", 2),
        _peer("torch", "timm", "lamb", "-foreach", "foreach=True", 2),
        _peer(
            "torch",
            "pytorch_optimizer",
            "lamb",
            "-loop",
            "loop (foreach=False); no bias correction",
            2,
        ),
        _peer(
            "torch",
            "pytorch_optimizer",
            "lamb",
            "-foreach",
            "foreach=True; no bias correction",
            2,
        ),
    ],
)
# Lars (Keras has none): tensors of rank <= 1 take no trust ratio in ours
# (the default), optax (masked) and pytorch_optimizer; timm adapts all.
CONFIGS += _family(
    "lars",
    1,
    [
        _peer(
            "jax",
            "optax",
            "lars",
            "",
            "jit, donated; rank<=1 masked (ratio, decay)",
            1,
        ),
        _peer(
            "torch",
            "timm",
            "lars",
            "-loop",
            "loop (foreach=False); adapts every tensor",
            1,
        ),
        _peer(
            "torch",
            "timm",
            "lars",
            "-foreach",
            "foreach=True; adapts every tensor",
            1,
        ),
        _peer(
            "torch",
            "pytorch_optimizer",
            "lars",
            "-loop",
            "loop (foreach=False); p.grad restored untimed",
            1,
        ),
        _peer(
            "torch",
            "pytorch_optimizer",
            "lars",
            "-foreach",
            "foreach=True; p.grad restored untimed",
            1,
        ),
    ],
)
CONFIGS_BY_NAME = {c["name"]: c for c in CONFIGS}
assert len(CONFIGS_BY_NAME) == len(CONFIGS)


# ---------------------------------------------------------------------------
# Child side: set up one configuration and time it.
# ---------------------------------------------------------------------------


def _data():
    """Parameters N(0,1)*0.02 (seed 0), fixed gradients N(0,1)*1e-3 (seed 1)."""
    import numpy as np

    rng_p = np.random.default_rng(0)
    rng_g = np.random.default_rng(1)
    params, grads = [], []
    for shape in SHAPES:
        params.append(
            (rng_p.standard_normal(shape, dtype=np.float32) * 0.02).astype(
                np.float32
            )
        )
        grads.append(
            (rng_g.standard_normal(shape, dtype=np.float32) * 1e-3).astype(
                np.float32
            )
        )
    return params, grads


def import_timm_optim(module="adan"):
    """Imports `timm.optim.<module>` without running `timm/__init__.py`.

    timm's package import pulls in torchvision (timm/layers/create_norm.py),
    which is not installed next to the CPU torch wheel. The optimizer
    modules only need torch, so register empty parent packages `timm` and
    `timm.optim` that point at the installed directories and import the
    submodule directly.
    """
    loaded = sys.modules.get("timm")
    if loaded is not None and getattr(loaded, "__path__", None):
        root = list(loaded.__path__)[0]  # the stub (or timm) is loaded
    else:
        spec = importlib.util.find_spec("timm")  # does not execute timm
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("timm is not installed")
        root = list(spec.submodule_search_locations)[0]
    for name, path in (
        ("timm", root),
        ("timm.optim", os.path.join(root, "optim")),
    ):
        existing = sys.modules.get(name)
        if existing is None:
            package = types.ModuleType(name)
            package.__path__ = [path]
            package.__package__ = name
            sys.modules[name] = package
    return importlib.import_module(f"timm.optim.{module}")


def _keras_optimizer(keras, cfg):
    if cfg["impl"] == "keras_batchopt":
        import keras_batchopt

        if cfg["opt"] == "lamb":
            return keras_batchopt.optimizers.Lamb(
                learning_rate=LAMB_LR, weight_decay=LAMB_WEIGHT_DECAY
            )
        if cfg["opt"] == "lars":
            # Default exclusions: rank <= 1 variables take no trust ratio.
            return keras_batchopt.optimizers.Lars(
                learning_rate=LARS_LR,
                momentum=LARS_MOMENTUM,
                weight_decay=LARS_WEIGHT_DECAY,
            )
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
    if cfg["opt"] == "adamw":
        return keras.optimizers.AdamW(
            learning_rate=LR, weight_decay=WEIGHT_DECAY
        )
    if cfg["opt"] == "lamb":
        # Keras applies the decay as a separate (decoupled) step.
        return keras.optimizers.Lamb(
            learning_rate=LAMB_LR, weight_decay=LAMB_WEIGHT_DECAY
        )
    raise ValueError(cfg)


def _optax_transform(optax, cfg):
    if cfg["opt"] == "lamb":
        return optax.lamb(LAMB_LR, weight_decay=LAMB_WEIGHT_DECAY)
    if cfg["opt"] == "lars":

        def rank_at_least_two(params):
            # Our Lars's default: rank <= 1 tensors take no trust ratio.
            return [p.ndim > 1 for p in params]

        return optax.lars(
            LARS_LR,
            weight_decay=LARS_WEIGHT_DECAY,
            weight_decay_mask=rank_at_least_two,
            trust_ratio_mask=rank_at_least_two,
            momentum=LARS_MOMENTUM,
        )
    return optax.adan(
        learning_rate=LR,
        b1=BETAS[0],
        b2=BETAS[1],
        b3=BETAS[2],
        eps=EPS,
        weight_decay=WEIGHT_DECAY,
    )


def _setup_jax(cfg, params, grads):
    import jax
    import jax.numpy as jnp

    info = {}
    g = [jnp.asarray(x) for x in grads]
    if cfg["impl"] == "floor":
        a = [jnp.asarray(x) for x in params]
        add = jax.jit(
            lambda a, b: [x + y for x, y in zip(a, b)], donate_argnums=0
        )
        state = {"a": a}

        def step():
            state["a"] = add(state["a"], g)
            jax.block_until_ready(state["a"])

        return step, info

    if cfg["impl"] == "optax":
        import optax

        tx = _optax_transform(optax, cfg)
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
    opt = _keras_optimizer(keras, cfg)
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


def _setup_tensorflow(cfg, params, grads):
    import tensorflow as tf

    # Before the first op.
    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(THREADS)
    info = {}
    xla = "XLA" in cfg["variant"]
    g = [tf.constant(x) for x in grads]
    if cfg["impl"] == "floor":
        a = [tf.Variable(x) for x in params]

        @tf.function(jit_compile=xla)
        def add(b):
            for v, y in zip(a, b):
                v.assign_add(y)

        def step():
            add(g)
            a[0][0, 0].numpy()

        return step, info

    import keras

    if "disable_fast_paths" in cfg["variant"]:
        import keras_batchopt

        keras_batchopt.config.disable_fast_paths()
    variables = [keras.Variable(x, name=f"w{i}") for i, x in enumerate(params)]
    opt = _keras_optimizer(keras, cfg)
    opt.build(variables)
    fn = tf.function(lambda g: opt.apply(g, variables), jit_compile=xla)

    def step():
        fn(g)
        opt.iterations.numpy()  # wait for the step on the host

    return step, info


def _setup_torch(cfg, params, grads):
    import torch

    torch.set_num_threads(THREADS)
    info = {}
    g = [torch.from_numpy(x) for x in grads]
    if cfg["impl"] == "floor":
        a = [torch.from_numpy(x.copy()) for x in params]

        def step():
            torch._foreach_add_(a, g)

        return step, info

    if cfg["impl"] in ("timm", "pytorch_optimizer"):
        foreach = "foreach=True" in cfg["variant"]
        ps = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in params]
        for p, grad in zip(ps, g):
            p.grad = grad
        if cfg["opt"] in ("lamb", "lars"):
            opt = _torch_peer(cfg, ps, foreach)
        elif cfg["impl"] == "timm":
            adan = import_timm_optim("adan")
            opt = adan.Adan(
                ps,
                lr=LR,
                betas=BETAS,
                eps=EPS,
                weight_decay=WEIGHT_DECAY,
                no_prox=False,
                foreach=foreach,
            )
        else:
            from pytorch_optimizer import Adan

            opt = Adan(
                ps,
                lr=LR,
                betas=BETAS,
                eps=EPS,
                weight_decay=WEIGHT_DECAY,
                weight_decouple=False,  # proximal, = no_prox=False
                foreach=foreach,
            )

        def step():
            with torch.no_grad():
                opt.step()

        if cfg["impl"] == "pytorch_optimizer" and cfg["opt"] == "lars":
            # pytorch_optimizer's LARS overwrites p.grad (with the momentum
            # buffer, among others); give each parameter its own copy and
            # restore it before every step, outside the timed call.
            own = [grad.clone() for grad in g]
            for p, grad in zip(ps, own):
                p.grad = grad

            def prepare():
                torch._foreach_copy_(own, g)

            step.prepare = prepare
        return step, info

    import keras

    variables = [
        keras.Variable(torch.from_numpy(x.copy()), name=f"w{i}")
        for i, x in enumerate(params)
    ]
    if cfg["impl"] == "keras_batchopt":
        import keras_batchopt

        if "disable_fast_paths" in cfg["variant"]:
            keras_batchopt.config.disable_fast_paths()
        if "set_torch_compile(False)" in cfg["variant"]:
            keras_batchopt.config.set_torch_compile(False)
    opt = _keras_optimizer(keras, cfg)
    opt.build(variables)
    info["optimizer_class"] = f"{type(opt).__module__}.{type(opt).__qualname__}"

    def step():
        with torch.no_grad():
            opt.apply(g, variables)

    if cfg["impl"] == "keras_batchopt":
        info["fast_path"] = opt._fast_path(g, variables) is not None

    def after():
        if cfg["impl"] != "keras_batchopt":
            return
        kernel = _torch_kernel(opt)
        info["torch_compile_failed"] = bool(kernel._failed)

    step.after = after
    return step, info


def _torch_peer(cfg, ps, foreach):
    """timm's or pytorch_optimizer's Lamb or Lars over parameters `ps`."""
    if cfg["impl"] == "timm" and cfg["opt"] == "lamb":
        # No global gradient-norm clipping (timm clips to 1.0 by default).
        return import_timm_optim("lamb").Lamb(
            ps,
            lr=LAMB_LR,
            weight_decay=LAMB_WEIGHT_DECAY,
            max_grad_norm=None,
            foreach=foreach,
        )
    if cfg["impl"] == "timm":
        # Adapts (and decays) every tensor, since weight_decay != 0.
        return import_timm_optim("lars").Lars(
            ps,
            lr=LARS_LR,
            momentum=LARS_MOMENTUM,
            weight_decay=LARS_WEIGHT_DECAY,
            foreach=foreach,
        )
    from pytorch_optimizer import LARS
    from pytorch_optimizer import Lamb

    if cfg["opt"] == "lamb":
        # Decay added to the update inside the trust ratio, as ours; no
        # bias correction (the paper's v3), weight norm clamped at 10.
        return Lamb(
            ps,
            lr=LAMB_LR,
            weight_decay=LAMB_WEIGHT_DECAY,
            weight_decouple=False,
            foreach=foreach,
        )
    # Tensors of rank <= 1 take neither trust ratio nor decay.
    return LARS(
        ps,
        lr=LARS_LR,
        momentum=LARS_MOMENTUM,
        weight_decay=LARS_WEIGHT_DECAY,
        foreach=foreach,
    )


def _torch_kernel(opt):
    """The `CompiledKernel` that our optimizer's torch fast path runs."""
    module = importlib.import_module(opt._fast_path_modules["torch"])
    if hasattr(opt, "trust_mode"):  # Lars: one kernel per mode
        return module._kernel(
            opt.trust_mode == "sum_of_norms", bool(opt.momentum)
        )
    return module._kernel


def run_child(name, steps, warmup):
    import numpy as np

    cfg = CONFIGS_BY_NAME[name]
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)  # benchmark this checkout
    t_setup = time.perf_counter()
    params, grads = _data()
    setup = {
        "jax": _setup_jax,
        "tensorflow": _setup_tensorflow,
        "torch": _setup_torch,
    }[cfg["framework"]]
    step, info = setup(cfg, params, grads)
    del params, grads
    gc.collect()
    setup_s = time.perf_counter() - t_setup

    # Untimed work before each step (restoring gradients that a peer
    # overwrites); it does count in the own/foreign CPU of the timed loop.
    prepare = getattr(step, "prepare", lambda: None)
    prepare()
    t0 = time.perf_counter()
    step()
    first_call_s = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        prepare()
        step()

    times = []
    flt0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    wait0 = runqueue_wait_s()
    busy0, own0, wall0 = cpu_busy_s(), own_cpu_s(), time.perf_counter()
    for _ in range(steps):
        prepare()
        t = time.perf_counter()
        step()
        times.append((time.perf_counter() - t) * 1e3)
    busy1, own1, wall1 = cpu_busy_s(), own_cpu_s(), time.perf_counter()
    wait1 = runqueue_wait_s()
    flt1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    # CPU time other processes used while we timed (the machine may be
    # shared); /proc/stat ticks are 10 ms, so short loops read coarsely.
    foreign_cpu_s = max((busy1 - busy0) - (own1 - own0), 0.0)
    if hasattr(step, "after"):
        step.after()

    arr = np.asarray(times)
    result = dict(
        config=name,
        group=cfg["group"],
        framework=cfg["framework"],
        impl=cfg["impl"],
        opt=cfg["opt"],
        variant=cfg["variant"],
        states=cfg["states"],
        threads=THREADS,
        n_params=N_PARAMS,
        n_tensors=len(SHAPES),
        bytes_per_step=bytes_per_step(cfg["states"]),
        steps=steps,
        warmup=warmup,
        median_ms=float(np.median(arr)),
        p10_ms=float(np.percentile(arr, 10)),
        p90_ms=float(np.percentile(arr, 90)),
        min_ms=float(arr.min()),
        mean_ms=float(arr.mean()),
        first_call_s=first_call_s,
        setup_s=setup_s,
        minflt_per_step=(flt1 - flt0) / steps,
        timed_wall_s=wall1 - wall0,
        own_cpu_s=own1 - own0,
        foreign_cpu_s=foreign_cpu_s,
        foreign_cores=foreign_cpu_s / (wall1 - wall0),
        own_cores=(own1 - own0) / (wall1 - wall0),
        runqueue_wait_frac=(wait1 - wait0) / (wall1 - wall0),
        times_ms=[round(t, 4) for t in times],
        inductor_cache_dir=os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default"),
        **info,
    )
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------
# Parent side: run the suite, aggregate, render markdown.
# ---------------------------------------------------------------------------


def _child_env(cfg, inductor_dir=None):
    env = dict(os.environ)
    if cfg.get("inductor_cache") == "suite" and inductor_dir:
        # Empty at the start of the suite: the first repeat compiles cold,
        # the later ones reuse this configuration's own kernel.
        env["TORCHINDUCTOR_CACHE_DIR"] = inductor_dir
    env.update(
        KERAS_BACKEND=cfg["framework"],
        OMP_NUM_THREADS=str(THREADS),
        MKL_NUM_THREADS=str(THREADS),
        TF_CPP_MIN_LOG_LEVEL="2",
        JAX_PLATFORMS="cpu",
        PYTHONWARNINGS="ignore",
    )
    return env


def _select(backend, only):
    groups = {"floor"}
    groups |= set(BACKEND_ORDER) if backend == "all" else {backend}
    configs = [c for c in CONFIGS if c["group"] in groups]
    if only:
        pattern = re.compile(only)
        configs = [
            c
            for c in configs
            if pattern.search(c["name"]) or c["name"] == FLOOR_NAME
        ]
    return configs


def package_fingerprint():
    """SHA-1 (12 hex digits) of the keras_batchopt sources benchmarked.

    Recorded with every row so that a table never mixes code versions
    silently (the tree may change while a suite runs).
    """
    digest = hashlib.sha1()
    root = os.path.join(REPO_ROOT, "keras_batchopt")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                digest.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()[:12]


def git_state():
    """(HEAD commit, whether keras_batchopt/ has uncommitted changes)."""

    def git(*argv):
        try:
            return subprocess.run(
                ["git", *argv],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--", "keras_batchopt"))
    return head, dirty


def _wait_for_quiet(args):
    """Waits (up to --max-wait s) until other processes use < --quiet cores.

    The benchmark machine may be shared; each child starts only once the
    other processes have been quiet for one 1-second sample. Returns the
    seconds waited and the last foreign load seen.
    """
    t0 = time.perf_counter()
    load = foreign_load(1.0)
    while load > args.quiet and time.perf_counter() - t0 < args.max_wait:
        time.sleep(2.0)
        load = foreign_load(1.0)
    return time.perf_counter() - t0, load


def _run_one(cfg, args, inductor_dir=None):
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        cfg["name"],
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ]
    preexec = None
    if args.nice is not None:

        def preexec():
            # Runs in the child after setsid(). With autogroup scheduling
            # (kernel.sched_autogroup_enabled=1) a process's nice value only
            # counts inside its session's group, so set the new group's nice
            # too. Negative values need root/CAP_SYS_NICE.
            try:
                with open("/proc/self/autogroup", "w") as f:
                    f.write(str(args.nice))
            except OSError:
                pass
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)

    try:
        proc = subprocess.run(
            cmd,
            env=_child_env(cfg, inductor_dir),
            preexec_fn=preexec,
            start_new_session=args.nice is not None,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=args.timeout,
        )
    except subprocess.TimeoutExpired:
        return dict(config=cfg["name"], error="timeout")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1][len("RESULT ") :])
    return dict(
        config=cfg["name"],
        error=f"exit {proc.returncode}",
        stderr_tail=proc.stderr[-2000:],
    )


def run_suite(args):
    configs = _select(args.backend, args.only)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    mode = "a" if args.append else "w"
    suite_t0 = time.perf_counter()
    run_id = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    inductor_dir = tempfile.mkdtemp(prefix="optimizer_step_inductor_")
    try:
        _run_suite(args, configs, mode, run_id, inductor_dir)
    finally:
        shutil.rmtree(inductor_dir, ignore_errors=True)
    print(f"suite took {time.perf_counter() - suite_t0:.0f} s", flush=True)


def _run_suite(args, configs, mode, run_id, inductor_dir):
    with open(args.out, mode) as out:
        for rep in range(args.repeats):
            for cfg in configs:
                for attempt in range(args.retries + 1):
                    waited, quiet_load = _wait_for_quiet(args)
                    t0 = time.perf_counter()
                    row = _run_one(cfg, args, inductor_dir)
                    wall = time.perf_counter() - t0
                    head, dirty = git_state()
                    row.update(
                        package_sha=package_fingerprint(),
                        git_head=head,
                        git_dirty=dirty,
                        run=rep,
                        attempt=attempt,
                        run_id=run_id,
                        process_wall_s=round(wall, 2),
                        waited_s=round(waited, 1),
                        foreign_cores_before=round(quiet_load, 3),
                        nice=args.nice,
                    )
                    # Disturbed: other processes ran while we timed AND
                    # our threads had to wait for a CPU because of it.
                    disturbed = (
                        "error" not in row
                        and row["foreign_cores"] > args.max_foreign
                        and row["runqueue_wait_frac"] > args.max_wait_frac
                    )
                    row["disturbed"] = disturbed
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                    if "error" in row:
                        msg = f"ERROR {row['error']}"
                        print(row.get("stderr_tail", ""), file=sys.stderr)
                    else:
                        msg = (
                            f"{row['median_ms']:8.2f} ms (p10 "
                            f"{row['p10_ms']:.2f}, p90 {row['p90_ms']:.2f})"
                            f"  1st {row['first_call_s']:.2f} s"
                            f"  flt/step {row['minflt_per_step']:.0f}"
                            f"  own {row['own_cores']:.2f} / foreign "
                            f"{row['foreign_cores']:.2f} cores, rq wait "
                            f"{row['runqueue_wait_frac']:.2f}"
                        )
                    print(
                        f"[run {rep + 1}/{args.repeats}] {cfg['name']:30s} "
                        f"{msg}  ({wall:.0f} s, waited {waited:.0f} s)"
                        + ("  DISTURBED" if disturbed else ""),
                        flush=True,
                    )
                    if not disturbed:
                        break


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    if n == 0:
        return float("nan")
    mid = n // 2
    return xs[mid] if n % 2 else 0.5 * (xs[mid - 1] + xs[mid])


def _read_meminfo_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def header_lines(rows):
    dists = [
        ("keras", "keras"),
        ("tensorflow", "tensorflow-cpu"),
        ("jax", "jax"),
        ("jaxlib", "jaxlib"),
        ("optax", "optax"),
        ("torch", "torch"),
        ("timm", "timm"),
        ("pytorch_optimizer", "pytorch_optimizer"),
        ("numpy", "numpy"),
    ]
    versions = []
    for label, dist in dists:
        v = _version(dist)
        if v == "not installed" and label == "tensorflow":
            v = _version("tensorflow")
        versions.append(f"{label} {v}")
    run_ids = sorted({r.get("run_id", "?") for r in rows})
    runs = sorted({r.get("run") for r in rows if r.get("run") is not None})
    steps = sorted({r["steps"] for r in rows if "steps" in r})
    warmups = sorted({r["warmup"] for r in rows if "warmup" in r})
    nices = sorted({str(r.get("nice")) for r in rows if "run" in r})
    opts = _row_opts(rows)
    lines = [
        "- machine: "
        f"{_cpu_model()}, {os.cpu_count()} cores, "
        f"{_read_meminfo_gib():.1f} GiB RAM, {platform.system()} "
        f"{platform.release()}",
        f"- python {platform.python_version()}; " + "; ".join(versions),
        "- keras_batchopt: this checkout at "
        + ", ".join(
            sorted(
                {
                    f"{r.get('git_head', '?')}"
                    + (" + uncommitted changes" if r.get("git_dirty") else "")
                    + f" (sources sha1 {r.get('package_sha', '?')})"
                    for r in rows
                    if "run" in r
                }
            )
        ),
        f"- rendered {datetime.date.today().isoformat()}; "
        f"suite run id(s) {', '.join(run_ids)}; "
        f"{len(runs)} run(s) per configuration, each in its own process; "
        f"{'/'.join(map(str, steps))} timed steps after "
        f"{'/'.join(map(str, warmups))} warm-up steps (the first one is "
        "'1st call')",
        f"- {len(SHAPES)} float32 tensors, {N_PARAMS:,} parameters "
        f"({4 * N_PARAMS / 1e6:.1f} MB per copy); {THREADS} threads "
        "(OMP_NUM_THREADS, torch.set_num_threads, TF intra/inter-op); "
        f"benchmark processes at nice {'/'.join(nices)} (None = inherited)",
    ]
    if opts & {"adan", "adam", "adamw"} or not opts:
        lines.append(
            f"- Adan rows: lr {LR}, betas {BETAS}, eps {EPS}, weight_decay "
            f"{WEIGHT_DECAY}, proximal decay (no_prox=False) except optax "
            "(decoupled decay only); Adam lr 1e-3; AdamW lr 1e-3, "
            f"weight_decay {WEIGHT_DECAY}"
        )
    if "lamb" in opts:
        lines.append(
            f"- Lamb rows: lr {LAMB_LR}, betas (0.9, 0.999), weight_decay "
            f"{LAMB_WEIGHT_DECAY} on every tensor, added to the update "
            "inside the trust ratio (ours, optax, timm with "
            "max_grad_norm=None, pytorch_optimizer with "
            "weight_decouple=False), except Keras (decoupled decay, outside "
            "the trust ratio); eps 1e-6 (Keras 1e-7); pytorch_optimizer has "
            "no bias correction and clamps the weight norm at 10"
        )
    if "lars" in opts:
        lines.append(
            f"- Lars rows: lr {LARS_LR}, momentum {LARS_MOMENTUM}, "
            f"weight_decay {LARS_WEIGHT_DECAY}, trust coefficient 1e-3; "
            "tensors of rank <= 1 take no trust ratio in ours (the default "
            "exclusion; decay on every tensor), optax (trust_ratio_mask, "
            "weight_decay_mask) and pytorch_optimizer (built in, no decay "
            "either); timm adapts and decays every tensor; ratio "
            "||w|| / ||g + wd w|| (ours, optax) or "
            "||w|| / (||g|| + wd ||w||) (timm, pytorch_optimizer)"
        )
    return lines


def _row_opts(rows):
    """The optimizers (`opt` of the configurations) present in `rows`."""
    return {
        CONFIGS_BY_NAME[r["config"]]["opt"]
        for r in rows
        if r.get("config") in CONFIGS_BY_NAME
    }


def aggregate(rows):
    """Per configuration: median of per-run medians and run-to-run spread."""
    # Per (config, run id, run): keep the attempt least disturbed by other
    # processes (the suite retries disturbed attempts).
    best = {}
    for r in rows:
        key = (r["config"], r.get("run_id"), r.get("run"))
        score = (
            "error" in r,
            r.get("disturbed", False),
            r.get("foreign_cores", 0.0),
        )
        if key not in best or score < best[key][0]:
            best[key] = (score, r)
    by_cfg = {}
    for _, r in best.values():
        by_cfg.setdefault(r["config"], []).append(r)
    agg = {}
    for name, rs in by_cfg.items():
        ok = [r for r in rs if "error" not in r]
        cfg = CONFIGS_BY_NAME.get(name, {})
        entry = dict(cfg, name=name, runs=len(ok), errors=len(rs) - len(ok))
        if ok:
            meds = [r["median_ms"] for r in ok]
            entry.update(
                median_ms=_median(meds),
                min_ms=min(meds),
                max_ms=max(meds),
                p10_ms=_median([r["p10_ms"] for r in ok]),
                p90_ms=_median([r["p90_ms"] for r in ok]),
                first_call_s=_median([r["first_call_s"] for r in ok]),
                first_call_min_s=min(r["first_call_s"] for r in ok),
                first_call_max_s=max(r["first_call_s"] for r in ok),
                minflt=_median([r["minflt_per_step"] for r in ok]),
                minflt_max=max(r["minflt_per_step"] for r in ok),
                foreign=max(r.get("foreign_cores", 0.0) for r in ok),
                own_cores=_median([r.get("own_cores", 0.0) for r in ok]),
                rq_wait=max(r.get("runqueue_wait_frac", 0.0) for r in ok),
                disturbed=sum(bool(r.get("disturbed")) for r in ok),
                bytes=ok[0]["bytes_per_step"],
                fast_path=[r.get("fast_path") for r in ok],
                compile_failed=any(r.get("torch_compile_failed") for r in ok),
            )
        agg[name] = entry
    return agg


def _fmt(x, digits=1):
    if x is None or x != x:
        return "-"
    return f"{x:.{digits}f}"


def render(rows):
    agg = aggregate(rows)
    floor = agg.get(FLOOR_NAME, {})
    floor_gbps = None
    if floor.get("median_ms"):
        floor_gbps = floor["bytes"] / (floor["median_ms"] * 1e-3) / 1e9

    def floor_ms(nbytes):
        return nbytes / (floor_gbps * 1e9) * 1e3 if floor_gbps else None

    opts = _row_opts(rows)
    ours = [o for o in ("adan", "lamb", "lars") if o in opts] or ["adan"]
    names = [o.capitalize() for o in ours]
    if len(names) > 1:
        names = [", ".join(names[:-1]) + " and " + names[-1]]
    lines = [f"# Optimizer step on CPU: keras_batchopt {names[0]} vs peers"]
    lines.append("")
    lines += header_lines(rows)
    lines.append("")
    if floor_gbps:
        lines.append(
            f"Reference floor ({floor['variant']}, {THREADS} threads): "
            f"**{floor['median_ms']:.2f} ms** for "
            f"{floor['bytes'] / 1e6:.1f} MB = **{floor_gbps:.1f} GB/s**. "
            "Bytes moved per step = (3 + 2 S) x 4 B x N, so the floor is "
            f"**{floor_ms(bytes_per_step(1)):.2f} ms** for Lars "
            f"(S=1, {bytes_per_step(1) / 1e6:.0f} MB), "
            f"**{floor_ms(bytes_per_step(2)):.2f} ms** for Adam/AdamW "
            f"and Lamb (S=2, {bytes_per_step(2) / 1e6:.0f} MB) and "
            f"**{floor_ms(bytes_per_step(4)):.2f} ms** for Adan "
            f"(S=4, {bytes_per_step(4) / 1e6:.0f} MB). "
            "x floor = ms / (bytes / floor GB/s)."
        )
        lines.append("")

    cols = [
        "backend",
        "impl",
        "optimizer",
        "variant",
        "S",
        "ms/step (median of runs)",
        "run-to-run min..max",
        "within-run p10..p90",
        "eff. GB/s",
        "x floor",
        "1st call s (min..max)",
        "minor faults/step",
        "own cores",
        "other procs, cores (max)",
    ]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    order = [c["name"] for c in CONFIGS]
    for name in sorted(
        agg, key=lambda n: order.index(n) if n in order else 999
    ):
        e = agg[name]
        if "median_ms" not in e:
            lines.append(
                f"| {e.get('group', '?')} | {e.get('impl', '?')} | "
                f"{e.get('opt', '?')} | {e.get('variant', name)} | "
                f"{e.get('states', '?')} | failed ({e['errors']} runs) |"
                + " |"
                * (len(cols) - 6)
            )
            continue
        gbps = e["bytes"] / (e["median_ms"] * 1e-3) / 1e9
        ratio = e["median_ms"] / floor_ms(e["bytes"]) if floor_gbps else None
        variant = e["variant"]
        if e.get("compile_failed"):
            variant += " [torch.compile FAILED, ran eagerly]"
        uses_fast_path = e["variant"].startswith("fast path")
        if uses_fast_path and False in (e.get("fast_path") or []):
            variant += " [fast path NOT used]"
        backend = e["framework"] if e["group"] == "floor" else e["group"]
        star = "**" if e["impl"] == "keras_batchopt" else ""
        lines.append(
            "| "
            + " | ".join(
                [
                    backend,
                    f"{star}{e['impl']}{star}",
                    e["opt"],
                    variant,
                    str(e["states"]) if e["states"] else "-",
                    f"**{e['median_ms']:.1f}**",
                    f"{e['min_ms']:.1f}..{e['max_ms']:.1f}",
                    f"{e['p10_ms']:.1f}..{e['p90_ms']:.1f}",
                    _fmt(gbps),
                    _fmt(ratio, 2),
                    f"{e['first_call_s']:.2f} "
                    f"({e['first_call_min_s']:.2f}.."
                    f"{e['first_call_max_s']:.2f})",
                    f"{e['minflt']:.0f}",
                    f"{e['own_cores']:.2f}",
                    f"{e['foreign']:.2f}"
                    + (
                        f" ({e['disturbed']} disturbed)"
                        if e["disturbed"]
                        else ""
                    ),
                ]
            )
            + " |"
        )
    lines.append("")
    lines.append(
        "Columns: ms/step is the median over runs of each run's median "
        "step; run-to-run is the min..max of those per-run medians; "
        "within-run p10..p90 is the median over runs; eff. GB/s = bytes "
        "moved / median time; 1st call includes tracing and compilation "
        "(torch.compile: cold or warm Inductor cache); minor faults/step "
        "are fresh pages touched per timed step (4 KiB each); own cores "
        "is the CPU time of the benchmark process / wall time while it "
        "timed (2.0 = both cores busy; median over runs); other procs is "
        "the CPU (in cores, max over runs) that other processes used "
        "meanwhile. A run is 'disturbed' when other processes used more "
        "than --max-foreign cores while our threads waited for a CPU more "
        "than --max-wait-frac of the time; disturbed runs were retried and "
        "the least disturbed attempt is kept."
    )
    lines.append("")
    shas = {r.get("package_sha") for r in rows if "run" in r}
    if len(shas) > 1:
        lines.append(
            "**Warning:** the keras_batchopt sources changed while the "
            f"suite ran ({len(shas)} versions: "
            f"{', '.join(sorted(map(str, shas)))}); rows may mix code "
            "versions."
        )
        lines.append("")
    disturbed = [n for n, e in agg.items() if e.get("disturbed")]
    if disturbed:
        lines.append(
            f"**Warning:** {len(disturbed)} configuration(s) kept a run that "
            "other processes disturbed even after retries ("
            + ", ".join(sorted(disturbed))
            + "); treat those rows with care."
        )
        lines.append("")
    lines += _targets(agg, floor_ms)
    return "\n".join(lines) + "\n"


# Our rows checked by the targets: (label, backend, name with {} = opt).
TARGET_ROWS = [
    ("JAX (jit, donated)", "jax", "jax-batchopt-{}"),
    ("TensorFlow XLA", "tensorflow", "tf-batchopt-{}-xla"),
    ("TensorFlow graph (= fit on CPU)", "tensorflow", "tf-batchopt-{}-graph"),
    (
        "torch (fast path, torch.compile)",
        "torch",
        "torch-batchopt-{}-compiled",
    ),
    (
        "torch (fast path, torch.compile, private Inductor cache)",
        "torch",
        "torch-batchopt-{}-compiled-fresh",
    ),
    ("torch (fast path, eager)", "torch", "torch-batchopt-{}-eager"),
]


def _targets(agg, floor_ms):
    """Checks the targets from the aggregated numbers.

    Adan: the issue's two targets. Lamb and Lars: the same floor target,
    and whether each of our rows beats every peer row of its backend.
    """

    def ms(name):
        return agg.get(name, {}).get("median_ms")

    out = ["## Targets (computed from the table)", ""]
    if not floor_ms(1):
        out.append("No floor row: targets not evaluated.")
        return out
    ours = {
        e.get("opt") for e in agg.values() if e.get("impl") == "keras_batchopt"
    }
    headed = bool(ours & {"lamb", "lars"})
    if "adan" in ours or not headed:
        if headed:
            out += ["### Adan", ""]
        out += _adan_targets(ms, floor_ms(bytes_per_step(4)))
    for opt, states in (("lamb", 2), ("lars", 1)):
        if opt in ours:
            out += ([""] if headed and out[-1] else []) + [
                f"### {opt.capitalize()}",
                "",
            ]
            out += _family_targets(agg, opt, floor_ms(bytes_per_step(states)))
    return out


def _adan_targets(ms, adan_floor):
    out = [
        f"Target 1, Adan step <= 2.0x its bytes-moved floor "
        f"({adan_floor:.2f} ms, so <= {2 * adan_floor:.2f} ms):",
        "",
    ]
    for label, _, pattern in TARGET_ROWS:
        m = ms(pattern.format("adan"))
        if m is None:
            continue
        ratio = m / adan_floor
        verdict = "met" if ratio <= 2.0 else "NOT met"
        out.append(f"- {label}: {m:.1f} ms = {ratio:.2f}x -> {verdict}")
    out.append("")
    out.append("Target 2, faster than the peers' Adan:")
    out.append("")
    comparisons = [
        ("JAX", "jax-batchopt-adan", ["jax-optax-adan"]),
        (
            "torch vs timm (best of loop/foreach)",
            "torch-batchopt-adan-compiled",
            ["torch-timm-adan-loop", "torch-timm-adan-foreach"],
        ),
        (
            "torch vs pytorch_optimizer (best of loop/foreach)",
            "torch-batchopt-adan-compiled",
            ["torch-pto-adan-loop", "torch-pto-adan-foreach"],
        ),
    ]
    comparisons += [
        (label + ", private Inductor cache", name + "-fresh", peers)
        for label, name, peers in comparisons[1:]
    ]
    for label, name, peers in comparisons:
        m = ms(name)
        peer_ms = [(ms(p), p) for p in peers if ms(p) is not None]
        if m is None or not peer_ms:
            continue
        best, best_name = min(peer_ms)
        verdict = "met" if m < best else "NOT met"
        out.append(
            f"- {label}: ours {m:.1f} ms vs {best_name} {best:.1f} ms "
            f"= {best / m:.2f}x speed-up -> {verdict}"
        )
    return out


def _family_targets(agg, opt, floor):
    """Lamb/Lars: floor target and fastest peer row per backend."""
    name = opt.capitalize()
    rows = [
        (label, group, agg[pattern.format(opt)]["median_ms"])
        for label, group, pattern in TARGET_ROWS
        if agg.get(pattern.format(opt), {}).get("median_ms") is not None
    ]
    out = [
        f"Target 1, {name} step <= 2.0x its bytes-moved floor "
        f"({floor:.2f} ms, so <= {2 * floor:.2f} ms):",
        "",
    ]
    for label, _, m in rows:
        ratio = m / floor
        verdict = "met" if ratio <= 2.0 else "NOT met"
        out.append(f"- {label}: {m:.1f} ms = {ratio:.2f}x -> {verdict}")
    out += [
        "",
        f"Target 2, faster than every peer {name} row on the same backend:",
        "",
    ]
    for label, group, m in rows:
        peers = sorted(
            (e["median_ms"], n)
            for n, e in agg.items()
            if e.get("opt") == opt
            and e.get("group") == group
            and e.get("impl") not in ("keras_batchopt", "floor")
            and e.get("median_ms") is not None
        )
        if not peers:
            out.append(f"- {label}: ours {m:.1f} ms; no peer row on {group}")
            continue
        best, best_name = peers[0]
        verdict = "met" if m < best else "NOT met"
        out.append(
            f"- {label}: ours {m:.1f} ms vs fastest peer {best_name} "
            f"{best:.1f} ms (of {len(peers)} peer row"
            f"{'s' if len(peers) > 1 else ''}) = {best / m:.2f}x "
            f"speed-up -> {verdict}"
        )
    return out


NOTES_HEADING = "## What the numbers show"


def write_markdown(rows, path):
    text = render(rows)
    # Keep a hand-written analysis section across re-renders.
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        index = old.find(NOTES_HEADING)
        if index >= 0:
            text += "\n" + old[index:]
    with open(path, "w") as f:
        f.write(text)
    return text


def load_rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backend",
        choices=("jax", "tensorflow", "torch", "all"),
        default="all",
        help="which rows to run (the torch floor always runs)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument(
        "--warmup",
        type=int,
        default=5,
        help="untimed steps before timing, the first one included",
    )
    parser.add_argument(
        "--out",
        default=os.path.join(
            REPO_ROOT, "benchmarks", "results", "optimizer_step_cpu.jsonl"
        ),
        help="JSONL file for the raw rows (the .md goes next to it)",
    )
    parser.add_argument(
        "--md", default=None, help="markdown path (default: --out with .md)"
    )
    parser.add_argument("--append", action="store_true", help="append to --out")
    parser.add_argument(
        "--only", default=None, help="regex on configuration names"
    )
    parser.add_argument(
        "--timeout", type=int, default=600, help="seconds per process"
    )
    parser.add_argument(
        "--quiet",
        type=float,
        default=0.2,
        help="start a process only when other processes use fewer cores",
    )
    parser.add_argument(
        "--max-wait",
        type=float,
        default=120.0,
        help="seconds to wait for --quiet before starting anyway",
    )
    parser.add_argument(
        "--max-foreign",
        type=float,
        default=0.2,
        help="a run is 'disturbed' (and retried) if other processes used "
        "more cores than this while it timed ...",
    )
    parser.add_argument(
        "--max-wait-frac",
        type=float,
        default=0.05,
        help="... and our threads waited for a CPU for more than this "
        "fraction of the timed wall time",
    )
    parser.add_argument(
        "--retries", type=int, default=1, help="retries of a disturbed run"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=None,
        help="run the benchmark processes at this nice value (e.g. -10 on "
        "a shared machine; negative values need root)",
    )
    parser.add_argument(
        "--table-only",
        metavar="FILE.jsonl",
        default=None,
        help="re-render the markdown table from a JSONL file and exit",
    )
    parser.add_argument("--list", action="store_true", help="list configs")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        run_child(args.child, args.steps, args.warmup)
        return
    if args.list:
        for cfg in _select(args.backend, args.only):
            print(cfg["name"], "-", cfg["variant"])
        return
    if args.table_only:
        rows = load_rows(args.table_only)
        md = args.md or os.path.splitext(args.table_only)[0] + ".md"
        print(write_markdown(rows, md))
        return
    if args.steps < 30:
        print(
            "warning: fewer than 30 timed steps; the issue asks for >= 30",
            file=sys.stderr,
        )
    run_suite(args)
    md = args.md or os.path.splitext(args.out)[0] + ".md"
    print(write_markdown(load_rows(args.out), md))


if __name__ == "__main__":
    main()
