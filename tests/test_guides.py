"""Runs every guide in `guides/` end to end, in quick mode.

Each guide runs as a plain script in a fresh interpreter, the way a reader
runs it, with the backend taken from the inherited `KERAS_BACKEND` and
`KERAS_BATCHOPT_GUIDE_QUICK=1` cutting its data and epochs.

On `NOTEBOOK_BACKEND` the guides run as notebooks instead, the same code
(`tests/test_notebooks.py`).

Each guide runs on one backend per suite (`guide_backend`: the guides in
name order take TensorFlow, JAX and PyTorch in turn), so that the guides
cost CI a third of running each on all three; the methods they show are
tested on every backend by their own tests. `KERAS_BATCHOPT_GUIDES=all`
runs every guide on every backend.
"""

import os
import pathlib
import subprocess
import sys

import pytest

GUIDES_DIR = pathlib.Path(__file__).resolve().parent.parent / "guides"
GUIDES = sorted(GUIDES_DIR.glob("*.py"))
TIMEOUT_S = 600
# The backend on which tests/test_notebooks.py runs the guides' notebooks.
NOTEBOOK_BACKEND = "jax"
GUIDE_BACKENDS = ("tensorflow", "jax", "torch")


def guide_backend(stem):
    """The backend a suite runs guide `stem` on ("all": on every one)."""
    if os.environ.get("KERAS_BATCHOPT_GUIDES") == "all":
        return "all"
    stems = sorted(path.stem for path in GUIDES)
    return GUIDE_BACKENDS[stems.index(stem) % len(GUIDE_BACKENDS)]


def skip_unless_guide_backend(stem, backend):
    """Skips, with the reason, where the guide runs on another backend."""
    chosen = guide_backend(stem)
    if chosen not in ("all", backend):
        pytest.skip(
            f"guide {stem} runs on {chosen} in this suite (one backend per "
            "guide; KERAS_BATCHOPT_GUIDES=all runs it on every backend)"
        )


@pytest.mark.slow
@pytest.mark.parametrize("guide", GUIDES, ids=lambda path: path.stem)
def test_guide_runs(guide, tmp_path):
    skip_unless_guide_backend(guide.stem, os.environ.get("KERAS_BACKEND"))
    if os.environ.get("KERAS_BACKEND") == NOTEBOOK_BACKEND:
        pytest.skip(
            f"on {NOTEBOOK_BACKEND} tests/test_notebooks.py runs this guide "
            "as its notebook"
        )
    env = dict(os.environ, KERAS_BATCHOPT_GUIDE_QUICK="1")
    result = subprocess.run(
        [sys.executable, str(guide)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{guide.name} exited with code {result.returncode} on backend "
            f"{os.environ.get('KERAS_BACKEND', '(default)')}.\n"
            f"--- stdout (last 2000 chars) ---\n{result.stdout[-2000:]}\n"
            f"--- stderr (last 8000 chars) ---\n{result.stderr[-8000:]}",
            pytrace=False,
        )
