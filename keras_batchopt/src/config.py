"""Run-time switches: whether backend fast paths may be used.

Functions rather than a bare global (the TensorFlow Addons lesson): the state
is read through ``fast_paths_enabled()`` at every optimizer step, so a switch
takes effect on the next step, also for an optimizer that already exists.
"""

import contextlib
import os

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _env_flag(name, default):
    value = os.environ.get(name)
    if value is None:
        return default
    value = value.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        f"Environment variable `{name}` must be one of "
        f"{_TRUE + _FALSE}. Received: {name}={value!r}"
    )


_state = {
    "fast_paths": _env_flag("KERAS_BATCHOPT_FAST_PATHS", True),
    "torch_compile": _env_flag("KERAS_BATCHOPT_TORCH_COMPILE", True),
}


def fast_paths_enabled():
    """Returns whether backend fast paths are used where they apply."""
    return _state["fast_paths"]


def enable_fast_paths():
    """Lets optimizers use their backend fast path (the default)."""
    _state["fast_paths"] = True


def disable_fast_paths():
    """Makes every optimizer run its generic `keras.ops` update.

    Also settable before import with ``KERAS_BATCHOPT_FAST_PATHS=0``.
    """
    _state["fast_paths"] = False


@contextlib.contextmanager
def fast_paths(enabled):
    """Context manager that sets the fast-path switch and restores it.

    Example:

    >>> import keras_batchopt
    >>> with keras_batchopt.config.fast_paths(False):
    ...     keras_batchopt.config.fast_paths_enabled()
    False
    """
    previous = _state["fast_paths"]
    _state["fast_paths"] = bool(enabled)
    try:
        yield
    finally:
        _state["fast_paths"] = previous


def torch_compile_enabled():
    """Returns whether torch fast paths compile their kernel.

    When on (the default), the torch fast path runs one fused kernel per
    variable, compiled by ``torch.compile`` on its first use (tens of seconds
    on a cold cache, a few seconds once the cache is warm). When off, or when
    compilation is not possible on this machine, the same kernel runs
    eagerly as in-place torch operations.
    """
    return _state["torch_compile"]


def set_torch_compile(enabled):
    """Turns compilation of torch fast-path kernels on or off.

    Also settable before import with ``KERAS_BATCHOPT_TORCH_COMPILE=0``.
    """
    _state["torch_compile"] = bool(enabled)
