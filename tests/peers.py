"""Importers for test-only peer libraries."""

import importlib
import importlib.util
import os
import sys
import types


def timm_optimizer(module, name):
    """`timm.optim.<module>.<name>` without running timm/__init__.py.

    timm imports torchvision at package import, and torchvision does not
    install beside the CPU torch wheel (perf-baseline doc, section 1.3). The
    optimizer modules themselves need only torch, so register bare parent
    packages and import the module directly.
    """
    if "timm" not in sys.modules:
        spec = importlib.util.find_spec("timm")
        if spec is None:
            raise ImportError("timm is not installed")
        root = os.path.dirname(spec.origin)
        for package_name, path in (
            ("timm", root),
            ("timm.optim", f"{root}/optim"),
        ):
            package = types.ModuleType(package_name)
            package.__path__ = [path]
            sys.modules[package_name] = package
    full_name = f"timm.optim.{module}"
    return getattr(importlib.import_module(full_name), name)
