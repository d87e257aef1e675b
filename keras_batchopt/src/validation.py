"""Argument checks with Keras-style messages.

Every message names the argument, the allowed range and the value received:
``Argument `beta_1` must be in [0, 1). Received: beta_1=1.5``.
"""

import math
import numbers


def fail(name, allowed, value):
    """Raises the house ValueError for argument ``name``."""
    raise ValueError(
        f"Argument `{name}` must be {allowed}. Received: {name}={value!r}"
    )


def _number(name, value, allowed):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(name, allowed, value)
    if not math.isfinite(float(value)):
        fail(name, allowed, value)
    return float(value)


def check_in_interval(name, value, low, high, low_closed, high_closed):
    """Checks ``low <(=) value <(=) high`` and returns ``float(value)``."""
    allowed = (
        f"in {'[' if low_closed else '('}{low:g}, {high:g}"
        f"{']' if high_closed else ')'}"
    )
    value = _number(name, value, allowed)
    if value < low or (value == low and not low_closed):
        fail(name, allowed, value)
    if value > high or (value == high and not high_closed):
        fail(name, allowed, value)
    return value


def check_beta(name, value):
    """A decay rate: a float in [0, 1)."""
    return check_in_interval(name, value, 0.0, 1.0, True, False)


def check_non_negative(name, value):
    """A finite float >= 0."""
    value = _number(name, value, "a finite float >= 0")
    if value < 0:
        fail(name, "a finite float >= 0", value)
    return value


def check_positive(name, value):
    """A finite float > 0."""
    value = _number(name, value, "a finite float > 0")
    if value <= 0:
        fail(name, "a finite float > 0", value)
    return value


def check_bool(name, value):
    """A Python bool (not merely truthy)."""
    if not isinstance(value, bool):
        fail(name, "a bool", value)
    return value


def check_one_of(name, value, choices):
    """One of ``choices``."""
    if value not in choices:
        fail(name, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def check_positive_int_or_none(name, value):
    """``None`` or an integer >= 1."""
    if value is None:
        return None
    allowed = "None or an integer >= 1"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(name, allowed, value)
    if value < 1:
        fail(name, allowed, value)
    return int(value)


def check_learning_rate(value):
    """A float learning rate must be >= 0; schedules and callables pass."""
    if isinstance(value, bool):
        fail("learning_rate", "a float >= 0, a schedule or a callable", value)
    if isinstance(value, numbers.Real):
        check_non_negative("learning_rate", value)
    return value


def check_positive_int(name, value):
    """An integer >= 1."""
    allowed = "an integer >= 1"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(name, allowed, value)
    if value < 1:
        fail(name, allowed, value)
    return int(value)


def check_non_negative_int(name, value):
    """An integer >= 0."""
    allowed = "an integer >= 0"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(name, allowed, value)
    if value < 0:
        fail(name, allowed, value)
    return int(value)
