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


def fast_paths_enabled():
    """Returns whether backend fast paths are used where they apply."""
    return _state["fast_paths"]


def enable_fast_paths():
    """Lets optimizers and the test-time normalization layers use their
    backend fast path (the default)."""
    _state["fast_paths"] = True


def disable_fast_paths():
    """Makes every optimizer run its generic `keras.ops` update, and the
    test-time normalization layers (`AlphaBatchNormalization`,
    `MomentumDecayBatchNormalization`, `UnMixTestTimeNormalization`)
    their generic inference step (on torch they otherwise run it as
    plain torch operations).

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


def torch_compile_mode():
    """Returns when torch fast paths compile their kernel: a string.

    - ``"auto"`` (the default): each optimizer runs the eager kernel (the
      same in-place torch operations, no compile pause) until its eager
      updates have taken ``TORCH_COMPILE_AFTER_SECONDS`` in total, about
      what compiling the kernel costs on a cold cache, then the kernel
      compiled by ``torch.compile`` for its variables of more than 32768
      elements; smaller variables stay eager (multi-tensor operations),
      where the eager kernel is as fast or faster (the measured
      break-even per variable lies between 4096 and 32768 elements; see
      ``benchmarks/torch_compile_policy.py``). A small model or a short
      run never pays for a compilation it would not earn back; a long run
      on a large model pays at most about twice what the best choice made
      in advance would cost (the rent-or-buy rule).
    - ``"always"``: the compiled kernel from the first step.
    - ``"never"``: the eager kernel only.

    Where compilation is not possible on this machine (no C++ compiler,
    no Triton), the eager kernel runs in every mode.
    """
    return _state["torch_compile"]


def torch_compile_enabled():
    """Returns whether torch fast paths may compile their kernel (the mode
    is not ``"never"``; see `torch_compile_mode`)."""
    return _state["torch_compile"] != "never"


def set_torch_compile(mode):
    """Sets when torch fast paths compile their kernel.

    Args:
        mode: ``"auto"`` (the default, see `torch_compile_mode`),
            ``True`` or ``"always"``, ``False`` or ``"never"``.

    Also settable before import with ``KERAS_BATCHOPT_TORCH_COMPILE`` set
    to ``auto``, ``always`` (or ``1``) or ``never`` (or ``0``).

    Example:

    >>> import keras_batchopt
    >>> keras_batchopt.config.set_torch_compile(False)
    >>> keras_batchopt.config.torch_compile_mode()
    'never'
    >>> keras_batchopt.config.set_torch_compile("auto")
    """
    _state["torch_compile"] = _compile_mode(mode, "mode")


def _compile_mode(value, name):
    if value is True or value == "always":
        return "always"
    if value is False or value == "never":
        return "never"
    if value == "auto":
        return "auto"
    raise ValueError(
        f"`{name}` must be True, False, 'always', 'never' or 'auto'. "
        f"Received: {name}={value!r}"
    )


def _env_compile_mode(name):
    value = os.environ.get(name, "auto").strip().lower()
    if value in ("auto", "always", "never"):
        return value
    if value in _TRUE:
        return "always"
    if value in _FALSE:
        return "never"
    raise ValueError(
        f"Environment variable `{name}` must be 'auto', 'always', 'never' "
        f"or one of {_TRUE + _FALSE}. Received: {name}={value!r}"
    )


# Eager update time after which the "auto" mode compiles (seconds).
TORCH_COMPILE_AFTER_SECONDS = 10.0

_state = {
    "fast_paths": _env_flag("KERAS_BATCHOPT_FAST_PATHS", True),
    "torch_compile": _env_compile_mode("KERAS_BATCHOPT_TORCH_COMPILE"),
}
