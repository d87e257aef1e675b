"""Decay shapes shared by the schedules, and the step-argument checks.

Every shape is a function ``f`` of the progress ``p`` in [0, 1] through a
decay window with ``f(0) = 1`` and ``f(1) = 0``; a schedule decays from
``start`` to a floor as ``floor + (start - floor) * f(p)``, so every shape
honours the floor and ends exactly on it.
"""

import math
import numbers

from keras import ops

from keras_batchopt.src import validation

DECAY_SHAPES = ("linear", "cosine", "1-sqrt", "1-square", "exponential")


def progress(step, start, length):
    """``clip((step - start) / length, 0, 1)`` as float32 (length >= 1)."""
    step = ops.cast(step, "float32")
    return ops.clip((step - start) / float(max(length, 1)), 0.0, 1.0)


def decay_fraction(shape, p, half_life_fraction=None):
    """The remaining fraction ``f(p)`` of a decay of the given shape.

    ``"exponential"`` is a half-life decay rescaled to reach 0 at ``p = 1``:
    ``(2^(-p/h) - 2^(-1/h)) / (1 - 2^(-1/h))`` with ``h`` the half-life as a
    fraction of the window.
    """
    if shape == "linear":
        return 1.0 - p
    if shape == "cosine":
        return 0.5 * (1.0 + ops.cos(math.pi * p))
    if shape == "1-sqrt":
        return 1.0 - ops.sqrt(p)
    if shape == "1-square":
        return 1.0 - ops.square(p)
    if shape == "exponential":
        end = 0.5 ** (1.0 / half_life_fraction)
        return (ops.power(0.5, p / half_life_fraction) - end) / (1.0 - end)
    raise ValueError(f"Unknown decay shape {shape!r}.")


def decay(shape, step, start, length, high, low, half_life=None):
    """``low + (high - low) * f(p)`` over ``[start, start + length]``."""
    fraction = None
    if shape == "exponential":
        fraction = half_life / max(length, 1)
    return low + (high - low) * decay_fraction(
        shape, progress(step, start, length), fraction
    )


def linear_warmup(step, length, high, low=0.0):
    """``low + (high - low) * step / length``, clipped to ``[0, length]``."""
    return low + (high - low) * progress(step, 0.0, length)


def check_half_life(half_life, decay_steps, name="half_life"):
    """Resolves the default half-life (a tenth of the window)."""
    if half_life is None:
        return max(decay_steps, 1) / 10.0
    return validation.check_positive(name, half_life)


def check_steps(name, value, total_steps):
    """A step count: an int >= 0, or a float in [0, 1], a fraction of
    ``total_steps`` (rounded to the nearest step)."""
    allowed = (
        "an int >= 0 (steps) or a float in [0, 1] (a fraction of `total_steps`)"
    )
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        validation.fail(name, allowed, value)
    if isinstance(value, numbers.Integral):
        if value < 0:
            validation.fail(name, allowed, value)
        return int(value)
    if not 0.0 <= float(value) <= 1.0:
        validation.fail(name, allowed, value)
    if total_steps is None:
        raise ValueError(
            f"Argument `total_steps` must be given when `{name}` is a "
            f"fraction ({name}={value!r}). Received: total_steps=None"
        )
    return int(round(float(value) * total_steps))


def check_total_steps(total_steps):
    """``None`` or an int >= 1."""
    return validation.check_positive_int_or_none("total_steps", total_steps)
