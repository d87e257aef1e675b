"""Checkpoints cross backends: a model trained and saved (`.keras`) on
this backend, with each optimizer of the package and each layer that
keeps state (`cases.py`), loads in a fresh process on each other backend
with the same state, bit for bit (every model variable, moving
statistics and backward-pass state included, and every optimizer
variable, in the same order and dtype), and `fit` continues to the same
next step as here (rtol 1e-5).

One subprocess per other backend loads all models (`worker.py`); run on
each of the three backends, the test covers all six directions.

Keras's own optimizers do not all cross backends (Keras 3.15.1): a model
compiled with `keras.optimizers.Adam` on torch saves the optimizer with
the module `keras.src.backend.torch.optimizers.torch_adam`, and loading
it on JAX builds torch's Adam, whose first step fails in
`torch._foreach_mul_` on JAX arrays. The package's optimizers are saved
under their registered names (`keras_batchopt>Adan`) and have no
backend-specific subclasses, so they load as themselves everywhere.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.checkpoints import cases
from tests.conftest import BACKEND

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
OTHERS = [b for b in MODULES if b != BACKEND]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Trains and saves every case here; returns the directory and, per
    case, the state saved and the state after the next step."""
    directory = tmp_path_factory.mktemp("checkpoints")
    records = {}
    for name in cases.CASES:
        model = cases.build_model(name)
        (x, y), (x_next, y_next) = cases.data(name)
        cases.fit(model, x, y)
        model.save(directory / f"{name}.keras")
        saved_state = cases.state(model)
        cases.fit(model, x_next, y_next)
        records[name] = (saved_state, cases.state(model))
        keras.backend.clear_session()
    return directory, records


def _run_worker(target, directory, out):
    env = dict(os.environ, KERAS_BACKEND=target, PYTHONPATH=ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "tests.checkpoints.worker", directory, out],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    with open(os.path.join(out, "results.json")) as f:
        meta = json.load(f)
    return meta, np.load(os.path.join(out, "results.npz"))


def _same_dtype(loaded, saved):
    """Equal dtypes, or both integer: Keras's optimizer counters
    (`iteration`) are int64 on TensorFlow and torch and int32 on JAX (64-bit
    types off), and a loaded counter takes the loading backend's dtype."""
    if loaded == saved:
        return True
    return all(np.issubdtype(np.dtype(d), np.integer) for d in (loaded, saved))


def _differences(name, saved_state, continued, meta, arrays):
    """What differs between this backend's record and the loader's."""
    problems = []
    count = len(saved_state["values"])
    if meta["model_count"] != saved_state["model_count"]:
        problems.append(f"{name}: model variable count differs")
    if len(meta["dtypes"]) != count:
        return problems + [
            f"{name}: {len(meta['dtypes'])} variables loaded, {count} saved"
        ]
    for i, (path, dtype) in enumerate(
        zip(saved_state["paths"], saved_state["dtypes"])
    ):
        loaded = arrays[f"{name}/loaded/{i}"]
        if not _same_dtype(meta["dtypes"][i], dtype):
            problems.append(f"{name} {path}: dtype {meta['dtypes'][i]}")
        elif not np.array_equal(loaded, saved_state["values"][i]):
            problems.append(f"{name} {path}: loaded value differs")
        after = arrays[f"{name}/continued/{i}"]
        if not np.allclose(after, continued["values"][i], 1e-5, 1e-6):
            worst = np.max(np.abs(after - continued["values"][i]))
            problems.append(f"{name} {path}: next step differs by {worst}")
    return problems


@pytest.mark.parametrize("target", OTHERS)
def test_checkpoint_loads_and_continues_on(target, saved, tmp_path):
    if importlib.util.find_spec(MODULES[target]) is None:
        pytest.skip(f"{target} is not installed: {BACKEND} -> {target}")
    directory, records = saved
    meta, arrays = _run_worker(target, str(directory), str(tmp_path))
    assert meta["backend"] == target
    problems = []
    for name, (saved_state, continued) in records.items():
        case_meta = meta["cases"][name]
        expected = type(cases.CASES[name][0]()).__name__
        if case_meta["optimizer"] != expected:
            problems.append(f"{name}: loaded as {case_meta['optimizer']}")
        problems += _differences(
            name, saved_state, continued, case_meta, arrays
        )
    assert not problems, "\n".join(problems)
