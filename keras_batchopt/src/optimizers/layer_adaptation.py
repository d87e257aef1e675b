"""Which variables a layer-wise optimizer (LAMB, LARS) adapts.

`exclude_from_layer_adaptation` is given as `None` (the optimizer's default
rule), a list of regular expressions searched in each variable's path
(`"sequential/dense_1/bias"`), or a callable that takes a `keras.Variable`
and returns True to exclude it. Patterns should name layers or variables
(`"dense_1/"`, `"bias"`), not the outer model: a model reloaded with
`keras.models.load_model` has paths without its own name (`"dense_1/bias"`).
The choice is resolved once per variable in `build()`, where variables
still carry their Keras paths, into a tuple of booleans.
"""

import re

import keras


def check_exclusions(value):
    """Validates `exclude_from_layer_adaptation`; returns it normalized.

    A single string is taken as a one-element list; every pattern must
    compile as a regular expression.
    """
    allowed = (
        "None, a list of regular expressions (strings) or a callable "
        "taking a variable"
    )
    if value is None or callable(value):
        return value
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(p, str) for p in value
    ):
        raise ValueError(
            f"Argument `exclude_from_layer_adaptation` must be {allowed}. "
            f"Received: exclude_from_layer_adaptation={value!r}"
        )
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(
                "Argument `exclude_from_layer_adaptation` must be "
                f"{allowed}; {pattern!r} is not a valid regular expression "
                f"({error}). Received: exclude_from_layer_adaptation={value!r}"
            ) from None
    return list(value)


def from_argument(value):
    """The constructor argument, validated (a config dict is deserialized)."""
    return check_exclusions(deserialize_exclusions(value))


def adapt_flags(exclusions, variables, default_rule):
    """A tuple with True for each variable that takes the trust ratio."""
    return tuple(
        not is_excluded(exclusions, variable, default_rule)
        for variable in variables
    )


def is_excluded(exclusions, variable, default_rule):
    """True if `variable` is excluded from layer adaptation.

    Args:
        exclusions: a value accepted by `check_exclusions`.
        variable: a `keras.Variable`.
        default_rule: a callable used when `exclusions` is None.
    """
    if exclusions is None:
        return bool(default_rule(variable))
    if callable(exclusions):
        return bool(exclusions(variable))
    path = getattr(variable, "path", None) or variable.name
    return any(re.search(pattern, path) for pattern in exclusions)


def serialize_exclusions(exclusions):
    """A config value: lists as they are, callables by Keras registration."""
    if callable(exclusions):
        return keras.saving.serialize_keras_object(exclusions)
    return exclusions


def deserialize_exclusions(value):
    if isinstance(value, dict):
        return keras.saving.deserialize_keras_object(value)
    return value
