"""Runs a distribution worker in its own interpreter and reads its JSON.

The device count (8 virtual CPU devices on JAX, 2 logical CPU devices on
TensorFlow) is fixed when the framework starts, so each worker runs once
per test file, from the repository root, and the rest of the suite keeps
one device.
"""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def run_worker(module, timeout=900):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p]
    )
    out = subprocess.run(
        [sys.executable, "-m", module],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
