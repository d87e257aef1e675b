"""Property-based tests of every normalization layer's constructor: any
valid arguments build a layer whose training call (which updates its
moving statistics) and inference call are finite on a small batch; any
invalid one raises a ValueError naming the argument."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_batchopt import layers
from tests.conftest import to_numpy
from tests.properties.strategies import INVALID_SETTINGS
from tests.properties.strategies import SETTINGS
from tests.properties.strategies import choice
from tests.properties.strategies import invalid_values
from tests.properties.strategies import valid_kwargs

C = 8
# Divisors of the C channels: valid group counts (others fail at build).
GROUPS = (st.sampled_from([1, 2, 4, 8]), st.integers(-3, 0))
# int(C * ratio) must be in [1, C - 1].
RATIO = (
    st.floats(1 / C, 1 - 1 / C),
    st.one_of(st.floats(-1.0, 0.0), st.floats(1.0, 2.0)),
)
UNIT_CLOSED = (
    st.floats(0.0, 1.0),
    st.one_of(
        st.floats(-1.0, -1e-6),
        st.floats(1.0, 2.0, exclude_min=True),
        st.just(float("nan")),
    ),
)
ODD = (st.sampled_from([1, 3, 5]), st.sampled_from([0, 2, 4, -1]))

# name -> (class, {argument: kind}, input shape without the batch).
LAYERS = {
    "ghost": (
        layers.GhostBatchNormalization,
        dict(
            virtual_batch_size="positive_int",
            momentum="beta",
            epsilon="positive",
            moving_statistics=choice("mean", "sequential"),
        ),
        (3, 3, C),
    ),
    "alpha_bn": (
        layers.AlphaBatchNormalization,
        dict(alpha=UNIT_CLOSED, momentum="beta", epsilon="positive"),
        (3, 3, C),
    ),
    "bcn": (
        layers.BatchChannelNormalization,
        dict(
            groups=GROUPS,
            batch_statistics=choice("estimated", "batch"),
            momentum="beta",
            epsilon="positive",
        ),
        (3, 3, C),
    ),
    "ibn": (
        layers.InstanceBatchNormalization,
        dict(ratio=RATIO, momentum="beta", epsilon="positive"),
        (3, 3, C),
    ),
    "region": (
        layers.RegionNormalization,
        dict(
            mode=choice("learned"),
            threshold=UNIT_CLOSED,
            kernel_size=ODD,
            epsilon="positive",
        ),
        (4, 4, C),
    ),
    "power": (
        layers.PowerNormalization,
        dict(
            alpha_forward="beta",
            alpha_backward="beta",
            warmup_steps="non_negative_int",
            groups=GROUPS,
            epsilon="positive",
            group_epsilon="positive",
        ),
        (5, C),
    ),
    "unified": (
        layers.UnifiedNormalization,
        dict(
            window_size="positive_int",
            warmup_steps="non_negative_int",
            outlier_filtration="bool",
            momentum="beta",
            epsilon="positive",
        ),
        (5, C),
    ),
    "rep_bn": (
        layers.RepBatchNormalization,
        dict(momentum="beta", epsilon="positive"),
        (5, C),
    ),
    "progressive_rep_bn": (
        layers.ProgressiveRepBN,
        dict(
            total_steps="positive_int",
            warmup_steps="non_negative_int",
            initial_ratio=(
                st.floats(1e-3, 1.0),
                st.one_of(
                    st.floats(-1.0, 0.0),
                    st.floats(1.0, 2.0).filter(lambda r: r > 1.0),
                ),
            ),
            inference_mode=choice("rep_bn", "blend"),
            layer_norm_epsilon="positive",
            momentum="beta",
            epsilon="positive",
        ),
        (5, C),
    ),
}
# The arguments without a default, for the invalid-argument test.
REQUIRED = {"ghost": dict(virtual_batch_size=2)}
names = pytest.mark.parametrize("name", sorted(LAYERS))


@names
def test_valid_arguments_give_finite_training_and_inference(name):
    cls, args, shape = LAYERS[name]
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, (4,) + shape).astype("float32")

    @SETTINGS
    @given(valid_kwargs(args))
    def check(kwargs):
        layer = cls(**kwargs)
        for training in (True, False):
            assert np.isfinite(to_numpy(layer(x, training=training))).all()
        for weight in layer.weights:
            assert np.isfinite(to_numpy(weight)).all(), (weight.path, kwargs)
        assert cls.from_config(layer.get_config()).get_config() == (
            layer.get_config()
        )

    check()


@names
def test_invalid_argument_raises_naming_it(name):
    cls, args, shape = LAYERS[name]

    for argument, kind in args.items():

        @INVALID_SETTINGS
        @given(invalid_values(kind))
        def check(value):
            with pytest.raises(ValueError, match=f"`{argument}`"):
                # Some arguments are checked against the input (groups
                # that divide the channels): build too.
                kwargs = {**REQUIRED.get(name, {}), argument: value}
                cls(**kwargs).build((None,) + shape)

        check()
