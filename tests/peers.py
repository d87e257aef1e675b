"""Importers for test-only peer libraries."""

import importlib.util
import os
import sys
import types


def timm_adan():
    """timm.optim.adan.Adan without running timm/__init__.py.

    timm imports torchvision at package import, and torchvision does not
    install beside the CPU torch wheel (perf-baseline doc, section 1.3). The
    optimizer module itself needs only torch, so register bare parent
    packages and import the module directly.
    """
    if "timm.optim.adan" not in sys.modules:
        spec = importlib.util.find_spec("timm")
        if spec is None:
            raise ImportError("timm is not installed")
        root = os.path.dirname(spec.origin)
        for name, path in (("timm", root), ("timm.optim", f"{root}/optim")):
            if name not in sys.modules:
                package = types.ModuleType(name)
                package.__path__ = [path]
                sys.modules[name] = package
    return importlib.import_module("timm.optim.adan").Adan
