"""Argument checks with Keras-style messages.

Every message names the argument, the allowed range and the value received:
``Argument `beta_1` must be in [0, 1). Received: beta_1=1.5``.
"""

import math
import numbers


def _fail(name, allowed, value):
    raise ValueError(
        f"Argument `{name}` must be {allowed}. Received: {name}={value!r}"
    )


def _number(name, value, allowed):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _fail(name, allowed, value)
    if not math.isfinite(float(value)):
        _fail(name, allowed, value)
    return float(value)


def check_in_interval(name, value, low, high, low_closed, high_closed):
    """Checks ``low <(=) value <(=) high`` and returns ``float(value)``."""
    allowed = (
        f"in {'[' if low_closed else '('}{low:g}, {high:g}"
        f"{']' if high_closed else ')'}"
    )
    value = _number(name, value, allowed)
    if value < low or (value == low and not low_closed):
        _fail(name, allowed, value)
    if value > high or (value == high and not high_closed):
        _fail(name, allowed, value)
    return value


def check_beta(name, value):
    """A decay rate: a float in [0, 1)."""
    return check_in_interval(name, value, 0.0, 1.0, True, False)


def check_non_negative(name, value):
    """A finite float >= 0."""
    value = _number(name, value, "a finite float >= 0")
    if value < 0:
        _fail(name, "a finite float >= 0", value)
    return value


def check_positive(name, value):
    """A finite float > 0."""
    value = _number(name, value, "a finite float > 0")
    if value <= 0:
        _fail(name, "a finite float > 0", value)
    return value


def check_bool(name, value):
    """A Python bool (not merely truthy)."""
    if not isinstance(value, bool):
        _fail(name, "a bool", value)
    return value


def check_one_of(name, value, choices):
    """One of ``choices``."""
    if value not in choices:
        _fail(name, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def check_positive_int_or_none(name, value):
    """``None`` or an integer >= 1."""
    if value is None:
        return None
    allowed = "None or an integer >= 1"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(name, allowed, value)
    if value < 1:
        _fail(name, allowed, value)
    return int(value)


def check_learning_rate(value):
    """A float learning rate must be >= 0; schedules and callables pass."""
    if isinstance(value, bool):
        _fail("learning_rate", "a float >= 0, a schedule or a callable", value)
    if isinstance(value, numbers.Real):
        check_non_negative("learning_rate", value)
    return value
