import gc
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_batchopt  # noqa: E402

BACKEND = keras.backend.backend()


@pytest.fixture(autouse=True, scope="module")
def _collect_module():
    """A full garbage collection after each module (see `_isolate`)."""
    yield
    gc.unfreeze()
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _isolate():
    """Fixed seeds, float32 policy and default switches around each test.

    `clear_session()` collects all garbage the test left; then what
    survives it is frozen (`gc.freeze`), so that the next test's collection
    does not rescan the ~600k long-lived objects of the frameworks (0.3 s a
    test, a quarter of a suite's time). `_collect_module` unfreezes and
    collects everything at the end of each module.
    """
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("float32")
    compile_mode = keras_batchopt.config.torch_compile_mode()
    with keras_batchopt.config.fast_paths(True):
        yield
    keras_batchopt.config.set_torch_compile(compile_mode)
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()
    gc.freeze()


def to_numpy(x):
    return np.array(keras.ops.convert_to_numpy(x))


# Backend-specific test files carry the backend in their name; on other
# backends they are not collected at all (rather than reported as skipped).
collect_ignore_glob = [
    f"**/test_{name}_*.py"
    for name in ("torch", "jax", "tensorflow")
    if name != BACKEND
]


def spy_on(module_name, function_name, monkeypatch):
    """Counts calls to `module.function` for the rest of the test."""
    import importlib

    module = importlib.import_module(module_name)
    calls = []
    original = getattr(module, function_name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, function_name, counted)
    return calls
