"""Property-based tests of every optimizer: any valid constructor
arguments build an optimizer whose step is finite; any invalid one raises
a ValueError naming the argument; and the step keeps the shape, dtype and
finiteness of variables of every rank from 0 to 5 (size-1 dimensions
included) in float32, float16 and bfloat16."""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keras_batchopt import optimizers
from tests.conftest import to_numpy
from tests.optimizers.contract_cases import CASES
from tests.properties.strategies import INVALID_SETTINGS
from tests.properties.strategies import SETTINGS
from tests.properties.strategies import choice
from tests.properties.strategies import invalid_values
from tests.properties.strategies import valid_kwargs

# class -> {argument: kind}: every numeric, boolean and choice argument.
ARGUMENTS = {
    optimizers.Adan: dict(
        learning_rate="learning_rate",
        beta_1="beta",
        beta_2="beta",
        beta_3="beta",
        epsilon="positive",
        weight_decay="non_negative",
        no_prox="bool",
        max_grad_norm="non_negative",
        restart_every="positive_int_or_none",
    ),
    optimizers.Lamb: dict(
        learning_rate="learning_rate",
        beta_1="beta",
        beta_2="beta",
        epsilon="positive",
        weight_decay="non_negative",
        max_trust_ratio="positive_or_none",
        bias_correction="bool",
    ),
    optimizers.Lars: dict(
        learning_rate="learning_rate",
        momentum="beta",
        nesterov="bool",
        weight_decay="non_negative",
        trust_coefficient="positive",
        epsilon="non_negative",
        trust_mode=choice("norm_of_sum", "sum_of_norms"),
        larc="bool",
    ),
    optimizers.SGDSaI: dict(
        learning_rate="learning_rate",
        momentum="beta",
        epsilon="positive",
        weight_decay="non_negative",
        official="bool",
    ),
    optimizers.SinkGD: dict(
        learning_rate="learning_rate",
        num_iterations="positive_int",
        sinkhorn_epsilon="positive",
        output_scale=choice("rms", "unit_frobenius"),
        weight_decay="non_negative",
        adam_beta_1="beta",
        adam_beta_2="beta",
        epsilon="positive",
        adam_lr_ratio="non_negative",
        exclude_embeddings="bool",
    ),
    optimizers.AdaGradNorm: dict(
        learning_rate="learning_rate",
        initial_accumulator_value="positive",
        accumulator=choice("global", "per_variable", "coordinate"),
        weight_decay="non_negative",
    ),
    optimizers.AdaHessian: dict(
        learning_rate="learning_rate",
        beta_1="beta",
        beta_2="beta",
        epsilon="non_negative",
        weight_decay="non_negative",
        hessian_power=(
            st.floats(1e-3, 1.0),
            st.one_of(
                st.floats(-1.0, 0.0),
                st.floats(1.0, 5.0, exclude_min=True),
                st.sampled_from([float("nan")]),
            ),
        ),
        hessian_averaging=choice("spatial", "spatial_and_input", "none"),
        hessian_update_interval="positive_int",
        seed="non_negative_int",
    ),
}
classes = pytest.mark.parametrize(
    "cls", list(ARGUMENTS), ids=lambda c: c.__name__
)
# Per class, the arguments of its first contract case (options on).
CASE_KWARGS = {}
for _case in reversed(CASES):
    CASE_KWARGS[_case.cls] = _case.kwargs


def _step(optimizer, variables, steps=1, seed=0):
    """`steps` steps on `variables` with random gradients of their dtype
    (and Hessian-vector products, for AdaHessian)."""
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        grads = [
            keras.ops.cast(rng.normal(size=v.shape), v.dtype) for v in variables
        ]
        if getattr(optimizer, "needs_hessian", False):
            hessians = [
                keras.ops.cast(rng.normal(size=v.shape), v.dtype)
                for v in variables
            ]
            with optimizer.using_hessian(hessians, variables):
                optimizer.apply(grads, variables)
        else:
            optimizer.apply(grads, variables)


def _finite(values):
    return all(np.isfinite(to_numpy(v).astype("float32")).all() for v in values)


def _variables(shapes, dtype="float32", seed=1):
    rng = np.random.default_rng(seed)
    return [
        keras.Variable(rng.normal(size=s).astype("float32"), dtype=dtype)
        for s in shapes
    ]


@classes
def test_valid_arguments_train_one_finite_step(cls):
    @SETTINGS
    @given(valid_kwargs(ARGUMENTS[cls]))
    def check(kwargs):
        optimizer = cls(**kwargs)
        variables = _variables([(3, 2), (2,), (2, 2, 3)])
        _step(optimizer, variables)
        assert _finite(variables), kwargs
        assert _finite(optimizer.variables), kwargs
        assert cls.from_config(optimizer.get_config()).get_config() == (
            optimizer.get_config()
        )

    check()


@classes
def test_invalid_argument_raises_naming_it(cls):
    for name, kind in ARGUMENTS[cls].items():

        @INVALID_SETTINGS
        @given(invalid_values(kind))
        def check(value):
            with pytest.raises(ValueError, match=f"`{name}`"):
                cls(**{name: value})

        check()


def _shapes():
    """0-d to 5-d shapes with dimensions 1 to 3."""
    return st.lists(st.integers(1, 3), min_size=0, max_size=5).map(tuple)


DTYPES = ["float32", "float16", "bfloat16"]


@classes
def test_step_keeps_shape_dtype_and_finiteness(cls):
    @SETTINGS
    @given(st.lists(_shapes(), min_size=1, max_size=3), st.sampled_from(DTYPES))
    def check(shapes, dtype):
        optimizer = cls(**CASE_KWARGS[cls])
        variables = _variables(shapes, dtype)
        _step(optimizer, variables, steps=2)
        for variable, shape in zip(variables, shapes):
            assert tuple(variable.shape) == shape
            assert variable.dtype == dtype
        assert _finite(variables), (shapes, dtype)
        assert _finite(optimizer.variables), (shapes, dtype)

    check()
