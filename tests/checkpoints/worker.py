"""Loads the checkpoints of `cases.py` saved on another backend, records
their state, continues `fit` and records again (run by
`test_cross_backend.py` in a fresh process: `python -m
tests.checkpoints.worker SAVED OUT`, with KERAS_BACKEND set)."""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_batchopt  # noqa: E402, F401  (registers the classes)
from tests.checkpoints import cases  # noqa: E402


def main(directory, out):
    arrays, meta = {}, {"backend": keras.backend.backend(), "cases": {}}
    for name in cases.CASES:
        # No custom_objects: the classes are registered by the import.
        model = keras.models.load_model(
            os.path.join(directory, f"{name}.keras")
        )
        model = cases.wire(model)
        # Keras saves the `jit_compile` that "auto" resolved to on the
        # saving backend (True on JAX), and torch would then run its steps
        # through `torch.compile` (minutes on a CPU). Train as a model
        # compiled here would by default.
        model.jit_compile = model._resolve_auto_jit_compile()
        loaded = cases.state(model)
        _, (x, y) = cases.data(name)
        cases.fit(model, x, y)
        continued = cases.state(model)
        meta["cases"][name] = {
            "optimizer": type(model.optimizer).__name__,
            "dtypes": loaded["dtypes"],
            "paths": loaded["paths"],
            "model_count": loaded["model_count"],
        }
        for stage, record in (("loaded", loaded), ("continued", continued)):
            for i, value in enumerate(record["values"]):
                arrays[f"{name}/{stage}/{i}"] = value
        keras.backend.clear_session()
    np.savez(os.path.join(out, "results.npz"), **arrays)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(meta, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
