"""The 50-tensor set every optimizer-step row updates, and the floor rows."""

import importlib
import importlib.util
import os
import sys
import types

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
# --quick: the same kinds of tensors (matrices, a conv kernel, vectors),
# tiny.
QUICK_SHAPES = [(64, 32), (32, 32), (3, 3, 8, 8), (32,), (64,)]
THREADS = 2


def size(shape):
    n = 1
    for d in shape:
        n *= d
    return n


N_PARAMS = sum(size(s) for s in SHAPES)
assert len(SHAPES) == 50 and N_PARAMS == 10_297_344


def shapes(quick=False):
    return QUICK_SHAPES if quick else SHAPES


def bytes_per_step(num_states, n_params=N_PARAMS):
    """Minimal single-pass traffic of one step, in bytes.

    An optimizer with S state tensors reads the gradient and reads and
    writes the parameter and each state: (3 + 2 S) * 4 B * N. The CPU
    floor (`a += b`) is the S = 0 case.
    """
    return (3 + 2 * num_states) * 4 * n_params


def data(quick=False):
    """Parameters N(0,1)*0.02 (seed 0), fixed gradients N(0,1)*1e-3 (seed 1)."""
    import numpy as np

    rng_p = np.random.default_rng(0)
    rng_g = np.random.default_rng(1)
    params, grads = [], []
    for shape in shapes(quick):
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


# The reference floor: in-place `a += b` over the same tensors.
FLOOR_NAME = "floor-torch-foreach_add"
FLOOR_CONFIGS = [
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
]
BACKEND_ORDER = ("jax", "tensorflow", "torch")


def peer(group, impl, opt, suffix, variant, states):
    """A peer row, named `<backend>-<impl>-<opt><suffix>`."""
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


def family(ours_like, opt, states, peers):
    """Our `opt` run every way the rows `ours_like` run, then its peers.

    `ours_like`: the keras_batchopt Adan rows; their names (with `adan`
    replaced by `opt`), variants and options are copied, so that every
    family always runs the same ways.
    """
    ours = [
        dict(c, name=c["name"].replace("-adan", f"-{opt}", 1), opt=opt)
        for c in ours_like
    ]
    rows = []
    for group in BACKEND_ORDER:
        rows += [dict(c, states=states) for c in ours if c["group"] == group]
        rows += [c for c in peers if c["group"] == group]
    return rows


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
        if sys.modules.get(name) is None:
            package = types.ModuleType(name)
            package.__path__ = [path]
            package.__package__ = name
            sys.modules[name] = package
    return importlib.import_module(f"timm.optim.{module}")
