"""Importers for test-only peer libraries."""

import importlib
import importlib.util
import os
import sys
import types


def timm_attribute(package, module, name):
    """`timm.<package>.<module>.<name>` without running timm/__init__.py.

    timm imports torchvision at package import (timm 1.0.31's
    `timm/layers/create_norm.py` imports `torchvision.ops.misc`), and the
    test environment has no torchvision beside the CPU torch wheel (timm is
    installed with `pip install --no-deps timm`, see benchmarks/README.md).
    The optimizer and conv modules themselves need only torch, so register
    bare parent packages and import the module directly.
    """
    if "timm" in sys.modules:
        root = sys.modules["timm"].__path__[0]
    else:
        spec = importlib.util.find_spec("timm")
        if spec is None:
            raise ImportError("timm is not installed")
        root = os.path.dirname(spec.origin)
    for package_name, path in (
        ("timm", root),
        (f"timm.{package}", f"{root}/{package}"),
    ):
        if package_name not in sys.modules:
            bare = types.ModuleType(package_name)
            bare.__path__ = [path]
            sys.modules[package_name] = bare
    full_name = f"timm.{package}.{module}"
    return getattr(importlib.import_module(full_name), name)


def timm_optimizer(module, name):
    """`timm.optim.<module>.<name>`, see `timm_attribute`."""
    return timm_attribute("optim", module, name)
