"""Hypothesis strategies for constructor arguments, by the kind of value
an argument takes, and the settings every property test uses (few
examples, no deadline, derandomized so that CI is reproducible)."""

import math

from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st

SETTINGS = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

NAN, INF = math.nan, math.inf


def _floats(low, high, **kwargs):
    return st.floats(low, high, allow_nan=False, **kwargs)


# kind -> (valid values, invalid values). The valid ranges are those a
# user would try; the invalid ones cross each bound and include NaN/Inf
# and values of the wrong type.
KINDS = {
    "learning_rate": (
        _floats(0.0, 1.0),
        st.one_of(_floats(-10.0, -1e-6), st.sampled_from([NAN, INF, True])),
    ),
    "beta": (
        _floats(0.0, 0.999),
        st.one_of(
            _floats(-1.0, -1e-6),
            _floats(1.0, 10.0),
            st.sampled_from([NAN, INF, None, "0.9"]),
        ),
    ),
    "positive": (
        _floats(1e-8, 1.0),
        st.one_of(_floats(-1.0, 0.0), st.sampled_from([NAN, INF, True])),
    ),
    "non_negative": (
        _floats(0.0, 0.1),
        st.one_of(_floats(-1.0, -1e-9), st.sampled_from([NAN, -INF, "1"])),
    ),
    "positive_int": (
        st.integers(1, 5),
        st.one_of(st.integers(-5, 0), st.sampled_from([2.5, True, "3"])),
    ),
    "non_negative_int": (
        st.integers(0, 5),
        st.one_of(st.integers(-5, -1), st.sampled_from([1.5, True])),
    ),
    "positive_int_or_none": (
        st.one_of(st.none(), st.integers(1, 5)),
        st.one_of(st.integers(-5, 0), st.sampled_from([2.5, False])),
    ),
    "positive_or_none": (
        st.one_of(st.none(), _floats(1e-3, 10.0)),
        st.one_of(_floats(-1.0, 0.0), st.sampled_from([NAN, INF])),
    ),
    "bool": (
        st.booleans(),
        st.sampled_from([0, 1, "True", None]),
    ),
}


def choice(*values):
    """A kind for an argument that takes one of `values`."""
    return (
        st.sampled_from(values),
        st.text(min_size=1, max_size=8).filter(lambda v: v not in values),
    )


def valid_kwargs(args):
    """A strategy of keyword arguments, one valid value for each of
    `args` (name -> kind name or `choice(...)`)."""
    return st.fixed_dictionaries(
        {name: _kind(kind)[0] for name, kind in args.items()}
    )


def invalid_values(kind):
    """A strategy of invalid values for an argument of `kind`."""
    return _kind(kind)[1]


# Fewer examples per argument: every argument of every class is checked.
INVALID_SETTINGS = settings(SETTINGS, max_examples=4)


def _kind(kind):
    return KINDS[kind] if isinstance(kind, str) else kind
