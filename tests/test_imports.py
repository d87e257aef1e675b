"""`import keras_batchopt` loads no backend framework but the selected one.

Two checks, as keras-hub does: a syntax-level scan that frameworks are
imported only under `src/backend/<name>/`, and a subprocess per backend in
which the other two frameworks cannot be imported at all (as if only one
backend were installed) and a model still trains with Adan.
"""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import BACKEND

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "keras_batchopt"
FRAMEWORKS = ("tensorflow", "jax", "torch", "optax")


def _imported_roots(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif (
            isinstance(node, ast.ImportFrom)
            and node.module
            and not (node.level)
        ):
            yield node.module.split(".")[0], node.lineno


def test_frameworks_are_imported_only_under_their_backend_folder():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        for root, line in _imported_roots(path):
            if root not in FRAMEWORKS:
                continue
            allowed = parts[:3] == ("src", "backend", root)
            if not allowed:
                offenders.append(f"{path}:{line} imports {root}")
    assert not offenders, "\n".join(offenders)


# Hide the other frameworks from the path finder, so that `import x` raises
# ModuleNotFoundError and `importlib.util.find_spec(x)` returns None, exactly
# as when the framework is not installed.
BLOCKER = """
import importlib.machinery
import sys


class _Hiding(importlib.machinery.PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        return super().find_spec(name, path, target)


sys.meta_path = [
    _Hiding if f is importlib.machinery.PathFinder else f
    for f in sys.meta_path
]
"""

PROGRAM = """
import numpy as np
import keras
before = set(sys.modules)
import keras_batchopt
added = {m.split(".")[0] for m in set(sys.modules) - before}
assert not added & set(BLOCKED), added & set(BLOCKED)
assert not added & {"tensorflow", "jax", "torch"} - {BACKEND}, added
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
model.compile(optimizer=keras_batchopt.optimizers.Adan(1e-2), loss="mse")
model.fit(np.ones((8, 3)), np.zeros((8, 2)), epochs=1, verbose=0)
print("OK")
"""


def test_import_and_train_with_only_the_selected_backend():
    blocked = [f for f in ("tensorflow", "jax", "torch") if f != BACKEND]
    source = (
        f"BLOCKED = {blocked!r}\nBACKEND = {BACKEND!r}\n" + BLOCKER + PROGRAM
    )
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", source],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert result.stdout.strip().endswith("OK")


@pytest.mark.parametrize("name", ["optimizers", "config"])
def test_public_modules_import_cleanly(name):
    __import__(f"keras_batchopt.{name}")
