"""`dispatch.backend_module`, the one place that maps Keras's backend to a
module of ours, and the modules generic code asks it for."""

import pathlib
import re
import sys

import pytest

from keras_batchopt.src.backend import dispatch
from keras_batchopt.src.optimizers import batch_optimizer
from tests.conftest import BACKEND
from tests.optimizers.contract_cases import CASES

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_batchopt"
BACKENDS = ("jax", "tensorflow", "torch")


def test_loads_the_current_backends_module():
    module = dispatch.backend_module("custom_gradient")
    expected = f"keras_batchopt.src.backend.{BACKEND}.custom_gradient"
    assert module.__name__ == expected
    assert sys.modules[expected] is module
    assert dispatch.module_path("custom_gradient") == expected
    assert dispatch.backend_name() == BACKEND


@pytest.mark.parametrize("name", ["no_such_module", "no_such_package.module"])
def test_missing_module_is_none_when_not_required(name):
    assert dispatch.backend_module(name, required=False) is None


@pytest.mark.parametrize("name", ["no_such_module", "no_such_package.module"])
def test_missing_module_raises_naming_it_and_the_backend(name):
    path = f"keras_batchopt.src.backend.{BACKEND}.{name}"
    with pytest.raises(NotImplementedError, match=re.escape(path)) as info:
        dispatch.backend_module(name)
    assert f"`{name}`" in str(info.value)
    assert repr(BACKEND) in str(info.value)


@pytest.fixture
def fake_backends(tmp_path, monkeypatch):
    """A stand-in backend package: `nested/module.py` and `broken.py`,
    which imports a framework that is not installed."""
    root = tmp_path / "fake_backends"
    (root / BACKEND / "nested").mkdir(parents=True)
    for folder in (root, root / BACKEND, root / BACKEND / "nested"):
        (folder / "__init__.py").write_text("")
    (root / BACKEND / "nested" / "module.py").write_text("VALUE = 1\n")
    (root / BACKEND / "broken.py").write_text("import no_such_framework_x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(dispatch, "PACKAGE", "fake_backends")
    yield
    for name in list(sys.modules):
        if name.split(".")[0] == "fake_backends":
            del sys.modules[name]


def test_loads_a_nested_module(fake_backends):
    module = dispatch.backend_module("nested.module")
    assert module.__name__ == f"fake_backends.{BACKEND}.nested.module"
    assert module.VALUE == 1
    assert dispatch.backend_module("nested.absent", required=False) is None


def test_missing_import_inside_a_module_is_not_hidden(fake_backends):
    # A module that exists but fails to import (say, it needs a framework
    # that is not installed) raises its own error, even with required=False.
    with pytest.raises(ModuleNotFoundError, match="no_such_framework_x"):
        dispatch.backend_module("broken", required=False)


def _requested_names():
    """The literal names generic code passes to `backend_module` as a
    required module (`required=False` marks one a backend may lack, such
    as TensorFlow's `distribute`)."""
    names = set()
    for path in (PACKAGE / "src").rglob("*.py"):
        if path.relative_to(PACKAGE / "src").parts[0] == "backend":
            continue
        names.update(
            re.findall(r'backend_module\(\s*"([\w.]+)"\s*\)', path.read_text())
        )
    return sorted(names)


def test_generic_code_asks_for_modules():
    # Guards the scan below against matching nothing.
    assert {"curvature", "ema", "sparse", "eager"} <= set(_requested_names())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", _requested_names())
def test_every_backend_has_every_module_generic_code_asks_for(backend, name):
    # Checked on files, so that the other backends' frameworks need not be
    # installed.
    path = PACKAGE / "src" / "backend" / backend / (name.replace(".", "/"))
    assert path.with_suffix(".py").is_file(), f"{backend} lacks {name}"


def test_fast_path_modules_exist_on_their_backend():
    classes = {case.cls for case in CASES} | {batch_optimizer.BatchOptimizer}
    checked = 0
    for cls in classes:
        for backend, name in getattr(cls, "_fast_path_modules", {}).items():
            path = PACKAGE / "src" / "backend" / backend
            path = path / name.replace(".", "/")
            assert path.with_suffix(".py").is_file(), (cls, backend, name)
            checked += 1
    assert checked
