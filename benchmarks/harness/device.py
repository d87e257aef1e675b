"""`--device` handling: CPU by default; CUDA checked before anything runs."""

import os
import sys

# What each backend needs in its environment to run on the device.
PLATFORM_ENV = {
    "cpu": {"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""},
    "cuda": {"JAX_PLATFORMS": "cuda"},
}


def cuda_problem(backend):
    """Why `backend` cannot run on CUDA here, or None when it can.

    Imports the backend's library in this process (cheap next to a suite).
    """
    try:
        if backend == "torch":
            import torch

            if not torch.cuda.is_available():
                return "torch.cuda.is_available() is False"
        elif backend == "jax":
            import jax

            try:
                devices = jax.devices("gpu")
            except RuntimeError:
                devices = []
            if not devices:
                return "jax has no gpu devices"
        elif backend == "tensorflow":
            import tensorflow as tf

            if not tf.config.list_physical_devices("GPU"):
                return "tensorflow lists no GPU devices"
    except ImportError as e:
        return f"{backend} is not installed ({e})"
    return None


def require(device, backends):
    """Exits with status 2 and one line if `device` is not usable.

    `backends`: the backends the run would use on that device.
    """
    if device != "cuda":
        return
    # Quiet the backends' import-time logging for this check.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    problems = [p for p in map(cuda_problem, backends) if p]
    if problems:
        print(
            "CUDA requested but not available: " + " / ".join(problems),
            file=sys.stderr,
        )
        raise SystemExit(2)


def synchronize(backend, device):
    """A callable that waits for the device's queued work (no-op on CPU)."""
    if device == "cuda" and backend == "torch":
        import torch

        return torch.cuda.synchronize
    return lambda: None
