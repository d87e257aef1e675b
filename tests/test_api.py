"""The public API: every exported object is reachable at its public path,
registered for serialization, and documented."""

import doctest
import importlib

import keras
import pytest

import keras_batchopt
from keras_batchopt.src.api_export import REGISTRY
from keras_batchopt.src.api_export import is_serializable


def _resolve(path):
    module_name, attribute = path.rsplit(".", 1)
    return getattr(importlib.import_module(module_name), attribute)


@pytest.mark.parametrize("path", sorted(REGISTRY))
def test_exported_path_resolves_and_is_registered(path):
    cls = REGISTRY[path]
    assert _resolve(path) is cls
    if not is_serializable(cls):
        return
    name = f"keras_batchopt>{path.rsplit('.', 1)[-1]}"
    assert keras.saving.get_registered_name(cls) == name
    assert keras.saving.get_registered_object(name) is cls


@pytest.mark.parametrize("path", sorted(REGISTRY))
def test_exported_class_docstring_has_the_house_sections(path):
    doc = REGISTRY[path].__doc__ or ""
    for section in ("Args:",):
        assert section in doc, f"{path} docstring lacks {section}"
    obj = REGISTRY[path]
    if path.startswith(("keras_batchopt.schedules.", "keras_batchopt.batch_")):
        for section in ("Example:", "References:"):
            assert section in doc, f"{path} docstring lacks {section}"
    elif issubclass(obj, keras.optimizers.Optimizer) and (
        path != "keras_batchopt.optimizers.BatchOptimizer"
    ):
        for section in ("Example:", "References:", "Note:"):
            assert section in doc, f"{path} docstring lacks {section}"


def test_public_optimizers_are_all_exported():
    public = {
        name
        for name in dir(keras_batchopt.optimizers)
        if not name.startswith("_")
    }
    exported = {
        p.rsplit(".", 1)[-1]
        for p in REGISTRY
        if p.startswith("keras_batchopt.optimizers.")
    }
    assert public == exported


def test_public_schedules_are_all_exported():
    public = {
        name
        for name in dir(keras_batchopt.schedules)
        if not name.startswith("_")
    }
    exported = {
        p.rsplit(".", 1)[-1]
        for p in REGISTRY
        if p.startswith("keras_batchopt.schedules.")
    }
    assert public == exported


def test_version():
    assert keras_batchopt.__version__.count(".") == 2


def _doctests(obj):
    return [
        t for t in doctest.DocTestFinder(recurse=False).find(obj) if t.examples
    ]


DOCUMENTED = [
    obj
    for obj in [REGISTRY[p] for p in sorted(REGISTRY)]
    + [keras_batchopt.config.fast_paths]
    if _doctests(obj)
]


@pytest.mark.parametrize("obj", DOCUMENTED, ids=lambda o: o.__name__)
def test_docstring_examples_run(obj):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in _doctests(obj):
        runner.run(test)
    assert runner.failures == 0
