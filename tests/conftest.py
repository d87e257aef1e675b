import gc
import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_batchopt  # noqa: E402

BACKEND = keras.backend.backend()
# (major, minor) of the installed Keras, for tests of version-dependent
# behaviour.
KERAS_VERSION = tuple(int(p) for p in keras.version().split(".")[:2])


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


# Backend-specific test files carry the backend in their name
# (`test_torch_*.py`). On other backends they are not imported (their
# module-level code may need that backend) but reported as one skipped
# test each, with the reason, so that they show in every report.
_BACKEND_FILE = re.compile(r"test_(torch|jax|tensorflow)_\w+\.py")


class _OtherBackendTest(pytest.Item):
    def __init__(self, *, backend, **kwargs):
        super().__init__(**kwargs)
        self.backend = backend

    def runtest(self):
        pytest.skip(
            f"{self.path.name} tests the {self.backend} backend only; "
            f"this run has KERAS_BACKEND={BACKEND}"
        )

    def reportinfo(self):
        return self.path, None, self.name


class _OtherBackendFile(pytest.File):
    def collect(self):
        backend = _BACKEND_FILE.fullmatch(self.path.name).group(1)
        yield _OtherBackendTest.from_parent(
            self, name=f"{backend}-only", backend=backend
        )


def pytest_pycollect_makemodule(module_path, parent):
    match = _BACKEND_FILE.fullmatch(module_path.name)
    if match and match.group(1) != BACKEND:
        return _OtherBackendFile.from_parent(parent, path=module_path)
    return None


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
