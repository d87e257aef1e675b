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
    if path.startswith(
        (
            "keras_batchopt.schedules.",
            "keras_batchopt.batch_",
            "keras_batchopt.layers.",
            "keras_batchopt.curvature.",
            "keras_batchopt.adaptation.",
            "keras_batchopt.strategies.",
        )
    ):
        for section in ("Example:", "References:"):
            assert section in doc, f"{path} docstring lacks {section}"
    elif issubclass(obj, keras.optimizers.Optimizer) and (
        path != "keras_batchopt.optimizers.BatchOptimizer"
    ):
        for section in ("Example:", "References:", "Note:"):
            assert section in doc, f"{path} docstring lacks {section}"


@pytest.mark.parametrize(
    "module",
    [
        "optimizers",
        "schedules",
        "layers",
        "curvature",
        "adaptation",
        "strategies",
    ],
)
def test_public_names_are_all_exported(module):
    public = {
        name
        for name in dir(getattr(keras_batchopt, module))
        if not name.startswith("_")
    }
    exported = {
        p.rsplit(".", 1)[-1]
        for p in REGISTRY
        if p.startswith(f"keras_batchopt.{module}.")
    }
    assert public == exported


@pytest.mark.parametrize(
    "path",
    sorted(p for p in REGISTRY if p.startswith("keras_batchopt.layers.")),
)
def test_layer_docstrings_state_training_and_inference(path):
    obj = REGISTRY[path]
    if not isinstance(obj, type):
        return
    doc = obj.__doc__.lower()
    assert "training" in doc and "inference" in doc, path


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
