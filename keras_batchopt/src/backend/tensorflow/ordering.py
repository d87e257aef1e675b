"""Where `ops.ordering.after` acts on TensorFlow: inside XLA only.

A plain TensorFlow graph orders a variable's write after its reads by
itself (automatic control dependencies), so the ordering is needed only
while an XLA-compiled update is traced (`optimizers.xla_update`) and would
only add operations elsewhere.
"""

import contextlib
import threading

_STATE = threading.local()


def orders_writes():
    """True while an XLA-compiled update is being traced on this thread."""
    return getattr(_STATE, "depth", 0) > 0


@contextlib.contextmanager
def xla_tracing():
    """Marks the code inside as traced for XLA (see `orders_writes`)."""
    _STATE.depth = getattr(_STATE, "depth", 0) + 1
    try:
        yield
    finally:
        _STATE.depth -= 1
