"""Torch fast paths equal the generic `keras.ops` update, step by step.

Collected on the torch backend only. Each optimizer in contract_cases.CASES
that names a torch fast path runs three ways on the same inputs: the
compiled fused kernel, the same kernel run eagerly, and the generic
per-variable `update_step` (fast paths disabled).
"""

import contextlib

import keras
import numpy as np
import pytest
import torch

import keras_batchopt
from keras_batchopt.src.backend import dispatch
from keras_batchopt.src.backend.torch import compile_utils
from tests.conftest import spy_on
from tests.conftest import to_numpy
from tests.optimizers.contract_cases import CASES

FAST_CASES = [
    c for c in CASES if "torch" in getattr(c.cls, "_fast_path_modules", {})
]
SHAPES = [(), (5,), (1,), (6, 4), (3, 3, 2, 4), (2, 1, 3)]
STEPS = 20


def hessian(case, optimizer, variables, rng=None):
    """`using_hessian` with Hessian-vector products for a Hessian optimizer
    (AdaHessian; random ones from `rng`, else ones), else a no-op."""
    if not case.needs_hessian:
        return contextlib.nullcontext()
    hvps = [
        keras.ops.convert_to_tensor(
            np.asarray(rng.randn(*v.shape) if rng else np.ones(v.shape))
        )
        for v in variables
    ]
    return optimizer.using_hessian(hvps, variables)


def run(case, mode, dtypes=None, steps=STEPS):
    dtypes = dtypes or ["float32"] * len(SHAPES)
    rng = np.random.RandomState(0)
    variables = [
        keras.Variable(
            np.asarray(rng.randn(*s), "float32"), dtype=d, name=f"v{i}"
        )
        for i, (s, d) in enumerate(zip(SHAPES, dtypes))
    ]
    optimizer = case.make()
    optimizer.exclude_from_weight_decay(var_names=["v2"])
    keras_batchopt.config.set_torch_compile(mode == "compiled")
    trajectory = []
    with keras_batchopt.config.fast_paths(mode != "generic"):
        for _ in range(steps):
            grads = [
                keras.ops.cast(np.asarray(rng.randn(*v.shape) * 2), d)
                for v, d in zip(variables, dtypes)
            ]
            with hessian(case, optimizer, variables, rng):
                optimizer.apply(grads, variables)
            state = [to_numpy(v) for v in optimizer.variables]
            trajectory.append([to_numpy(v) for v in variables] + state)
    return trajectory


def assert_close(a, b, rtol, atol):
    for step, (xs, ys) in enumerate(zip(a, b)):
        for x, y in zip(xs, ys):
            np.testing.assert_allclose(
                x.astype("float64"),
                y.astype("float64"),
                rtol=rtol,
                atol=atol,
                err_msg=f"step {step}",
            )


def _atol(case):
    """Element-wise kernels repeat the generic operations exactly; kernels
    that take norms sum in another order (Inductor splits a reduction over
    threads), so their ratio can differ by an ulp, and a variable near 0
    after cancellation by a few ulp of its O(1) terms (1 ulp of 1.0 is
    1.2e-7 in float32)."""
    return 3e-7 if case.cls.__name__ in ("Lamb", "Lars") else 1e-7


def spy(case, monkeypatch):
    module = dispatch.module_path(case.cls._fast_path_modules["torch"])
    return spy_on(module, "update_step", monkeypatch)


# Which variables take the per-variable kernel and which the grouped
# multi-tensor update (compile_utils.GROUP_MAX_NUMEL): all of SHAPES are
# small, so the default groups them all; "mixed" splits them.
ROUTES = {"per_variable": -1, "grouped": 10**9, "mixed": 10}


def route(name, monkeypatch):
    monkeypatch.setattr(compile_utils, "GROUP_MAX_NUMEL", ROUTES[name])


def _routes(case):
    module = dispatch.backend_module(case.cls._fast_path_modules["torch"])
    if hasattr(module, "_grouped_update"):
        return sorted(ROUTES)
    return ["per_variable"]


ROUTED_CASES = [
    pytest.param(case, path, id=f"{case}-{path}")
    for case in FAST_CASES
    for path in _routes(case)
]


@pytest.mark.parametrize("case,path", ROUTED_CASES)
@pytest.mark.parametrize("mode", ["compiled", "eager"])
def test_fast_path_equals_generic(case, mode, path, monkeypatch):
    route(path, monkeypatch)
    calls = spy(case, monkeypatch)
    fast = run(case, mode)
    assert len(calls) == STEPS, "the fast path did not run"
    generic = run(case, "generic")
    assert len(calls) == STEPS, "the fast path ran while disabled"
    assert_close(fast, generic, rtol=1e-6, atol=_atol(case))


@pytest.mark.parametrize("case", FAST_CASES, ids=str)
def test_fast_path_with_mixed_dtypes(case, monkeypatch):
    route("mixed", monkeypatch)
    dtypes = ["float32", "float16", "float32", "bfloat16", "float32", "float16"]
    fast = run(case, "compiled", dtypes, steps=5)
    generic = run(case, "generic", dtypes, steps=5)
    assert_close(fast, generic, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("case", FAST_CASES, ids=str)
def test_fast_path_is_not_used_in_a_stateless_scope(case, monkeypatch):
    calls = spy(case, monkeypatch)
    rng = np.random.RandomState(0)
    variables = [keras.Variable(rng.randn(3, 2).astype("float32"))]
    optimizer = case.make()
    optimizer.build(variables)
    before = to_numpy(variables[0])
    with hessian(case, optimizer, variables):
        optimizer.stateless_apply(
            [v.value for v in optimizer.variables],
            [keras.ops.ones((3, 2))],
            [v.value for v in variables],
        )
    assert not calls
    np.testing.assert_array_equal(to_numpy(variables[0]), before)


def test_compile_failure_falls_back_to_eager_with_a_warning(monkeypatch):
    def double(x):
        x.mul_(2)

    def failing_compile(fn, **kwargs):
        def compiled(*args):
            raise RuntimeError("no C++ compiler")

        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile)
    kernel = compile_utils.CompiledKernel(double, "test")
    x = torch.ones(3)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        kernel.get(True)(x)
    np.testing.assert_array_equal(x.numpy(), 2.0)
    kernel.get(True)(x)  # no second warning, still eager
    np.testing.assert_array_equal(x.numpy(), 4.0)


def test_switch_functions():
    assert keras_batchopt.config.fast_paths_enabled()
    keras_batchopt.config.disable_fast_paths()
    assert not keras_batchopt.config.fast_paths_enabled()
    keras_batchopt.config.enable_fast_paths()
    assert keras_batchopt.config.fast_paths_enabled()


@pytest.mark.parametrize("case", FAST_CASES, ids=str)
def test_one_compiled_graph_serves_all_shapes_and_options(case, monkeypatch):
    """Recompiles would cost seconds each and, past Dynamo's cache limit,
    silently fall back to eager: shapes, ranks, per-variable options and
    steps must all share one graph (plus one for size-1 tensors, which
    Dynamo always specializes)."""
    from torch._dynamo.utils import counters

    route("per_variable", monkeypatch)
    torch._dynamo.reset()
    counters.clear()
    keras_batchopt.config.set_torch_compile(True)
    for shapes in ([(3,), (4, 5)], [(2, 3, 4, 5), (7, 2)], [(1,), (6,)]):
        variables = [keras.Variable(np.ones(s, "float32")) for s in shapes]
        optimizer = case.make()
        optimizer.exclude_from_weight_decay(var_list=variables[:1])
        for _ in range(3):
            with hessian(case, optimizer, variables):
                optimizer.apply([keras.ops.ones(s) for s in shapes], variables)
    assert 1 <= counters["stats"]["unique_graphs"] <= 2


@pytest.mark.parametrize("case", FAST_CASES, ids=str)
def test_auto_compiles_only_after_the_eager_time_budget(case, monkeypatch):
    """ "auto" runs the eager kernel (no compile pause) until the
    optimizer's eager updates have taken the budget, then the compiled
    one, for variables of more than GROUP_MAX_NUMEL elements only."""
    uses = []
    real_get = compile_utils.CompiledKernel.get

    def recording_get(kernel, use_compile):
        uses.append(use_compile)
        return real_get(kernel, use_compile)

    monkeypatch.setattr(compile_utils.CompiledKernel, "get", recording_get)
    keras_batchopt.config.set_torch_compile("auto")
    large = (compile_utils.GROUP_MAX_NUMEL // 64 + 1, 64)
    variables = [keras.Variable(np.ones(large, "float32"))]
    optimizer = case.make()
    for _ in range(3):
        with hessian(case, optimizer, variables):
            optimizer.apply([keras.ops.ones(large)], variables)
    assert uses and not any(uses)
    spent = optimizer._torch_eager_update_seconds
    assert spent > 0
    monkeypatch.setattr(
        keras_batchopt.src.config, "TORCH_COMPILE_AFTER_SECONDS", spent
    )
    uses.clear()
    with hessian(case, optimizer, variables):
        optimizer.apply([keras.ops.ones(large)], variables)
    assert uses and all(uses)
    assert optimizer._torch_eager_update_seconds == spent
    # Small variables stay eager in "auto", whatever the time spent.
    assert not compile_utils.compile_now(optimizer, numel=4096)
    assert compile_utils.compile_now(optimizer, numel=large[0] * large[1])


def test_compile_mode_switch_and_its_errors():
    config = keras_batchopt.config
    for mode, expected in (
        (True, "always"),
        (False, "never"),
        ("auto", "auto"),
    ):
        config.set_torch_compile(mode)
        assert config.torch_compile_mode() == expected
        assert config.torch_compile_enabled() == (expected != "never")
    with pytest.raises(ValueError, match="`mode` must be .* Received: mode=2"):
        config.set_torch_compile(2)


@pytest.mark.parametrize(
    "value, expected",
    [("auto", "auto"), ("1", "always"), ("never", "never"), ("off", "never")],
)
def test_compile_mode_from_the_environment(value, expected, monkeypatch):
    monkeypatch.setenv("KERAS_BATCHOPT_TORCH_COMPILE", value)
    mode = keras_batchopt.src.config._env_compile_mode(
        "KERAS_BATCHOPT_TORCH_COMPILE"
    )
    assert mode == expected
    monkeypatch.setenv("KERAS_BATCHOPT_TORCH_COMPILE", "sometimes")
    with pytest.raises(
        ValueError, match="'auto', 'always', 'never'.*sometimes"
    ):
        keras_batchopt.src.config._env_compile_mode(
            "KERAS_BATCHOPT_TORCH_COMPILE"
        )
