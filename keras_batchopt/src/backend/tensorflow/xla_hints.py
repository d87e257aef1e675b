"""`ops.xla_hints` on TensorFlow: active inside XLA only.

A plain TensorFlow graph orders a variable's write after its reads by
itself (automatic control dependencies) and runs each operation once, so
the hints are needed only while an XLA-compiled update is traced
(`optimizers.xla_update` marks it with `xla_tracing()`); elsewhere they
would only add operations, and XLA's barrier has no kernel outside XLA.
"""

import contextlib
import threading

from tensorflow.compiler.tf2xla.python import xla

_STATE = threading.local()


def active():
    """True while an XLA-compiled update is being traced on this thread."""
    return getattr(_STATE, "depth", 0) > 0


@contextlib.contextmanager
def xla_tracing():
    """Marks the code inside as traced for XLA (see `active`)."""
    _STATE.depth = getattr(_STATE, "depth", 0) + 1
    try:
        yield
    finally:
        _STATE.depth -= 1


def sum_in_blocks():
    """True: long sums of squares are cheaper in two stages here.

    TensorFlow's XLA:CPU rewrites a sum over a dimension longer than 32
    into a windowed sum before it fuses, so the squares go to a full-size
    temporary read by a slow kernel (see `ops.trust_ratio.sum_of_squares`).
    """
    return True


def optimization_barrier(values):
    """`values` through XLA's `OptimizationBarrier` (tf2xla's op)."""
    return tuple(xla.optimization_barrier(*values))
