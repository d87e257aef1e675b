"""Lamb against independent oracles, over many steps, on every backend.

Oracles: the NumPy port of TensorFlow Addons' LAMB test reference
(tests/references/lamb_numpy.py), `optax.lamb` (run in JAX whatever the
Keras backend) and, without weight decay, `keras.optimizers.Lamb`.
pytorch_optimizer's Lamb is a different variant (no bias correction, weight
norm clamped at 10: `clamp = 10.0` and `adam_debias` off by default in
`pytorch_optimizer/optimizer/lamb.py`, version 4.1.0) and is not an oracle.
"""

import keras
import numpy as np
import pytest

from keras_batchopt.optimizers import Lamb
from tests.conftest import to_numpy
from tests.optimizers import oracle_harness as harness
from tests.optimizers.oracle_harness import assert_trajectories_close
from tests.optimizers.oracle_harness import max_rel_error
from tests.optimizers.oracle_harness import run_numpy
from tests.references.lamb_numpy import VARIANTS
from tests.references.lamb_numpy import LambNumpy

# w3 is a zero-initialized bias: its first trust ratio takes the zero-norm
# guard.
SHAPES = [(7,), (5, 3), (2, 3, 3, 2), (4,)]
STEPS = 60


def gradient_sequence(steps=STEPS, seed=0):
    return harness.gradient_sequence(SHAPES, steps, seed)


def initial_params():
    return harness.initial_params(SHAPES, zero=(3,))


def masks(names):
    """True for the variables w0..w3 not named in `names`."""
    return [f"w{i}" not in names for i in range(len(SHAPES))]


def constant(lr):
    return lambda step: lr


# name -> (our kwargs, names excluded from decay, reference kwargs)
CONFIGS = {
    "defaults": (dict(learning_rate=0.01), [], {}),
    "decay": (
        dict(learning_rate=0.01, weight_decay=0.1),
        [],
        dict(weight_decay=0.1),
    ),
    "decay_exclusions_default_adaptation": (
        dict(learning_rate=0.01, weight_decay=0.1),
        ["w0", "w3"],
        dict(weight_decay=0.1, decay_mask=masks(["w0", "w3"])),
    ),
    "decay_exclusions_adapt_everything": (
        dict(
            learning_rate=0.01,
            weight_decay=0.1,
            exclude_from_layer_adaptation=[],
        ),
        ["w0", "w3"],
        dict(
            weight_decay=0.1,
            decay_mask=masks(["w0", "w3"]),
            adapt_mask=[True] * 4,
        ),
    ),
    "adaptation_regex": (
        dict(
            learning_rate=0.01,
            weight_decay=0.1,
            exclude_from_layer_adaptation=["w[13]$"],
        ),
        [],
        dict(weight_decay=0.1, adapt_mask=masks(["w1", "w3"])),
    ),
    "adaptation_callable": (
        dict(
            learning_rate=0.01,
            weight_decay=0.1,
            exclude_from_layer_adaptation=lambda v: len(v.shape) > 2,
        ),
        [],
        dict(weight_decay=0.1, adapt_mask=[True, True, False, True]),
    ),
    "lambc": (
        dict(learning_rate=0.01, weight_decay=0.1, max_trust_ratio=0.5),
        [],
        dict(weight_decay=0.1, max_trust_ratio=0.5),
    ),
    "no_bias_correction": (
        dict(learning_rate=0.01, weight_decay=0.1, bias_correction=False),
        [],
        dict(weight_decay=0.1, bias_correction=False),
    ),
    "other_betas": (
        dict(learning_rate=0.03, beta_1=0.8, beta_2=0.99, epsilon=1e-4),
        [],
        dict(beta_1=0.8, beta_2=0.99, epsilon=1e-4),
    ),
}


def make(config, learning_rate=None):
    kwargs, excluded, reference_kwargs = config
    if learning_rate is not None:
        kwargs = dict(kwargs, learning_rate=learning_rate)
    optimizer = Lamb(**kwargs)
    if excluded:
        optimizer.exclude_from_weight_decay(var_names=excluded)
    return optimizer, LambNumpy(initial_params(), **reference_kwargs)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_numpy_reference(name):
    grads_seq = gradient_sequence()
    optimizer, reference = make(CONFIGS[name])
    ours, _ = harness.run_keras(optimizer, grads_seq, initial_params())
    lr = CONFIGS[name][0]["learning_rate"]
    assert_trajectories_close(
        ours, run_numpy(reference, grads_seq, constant(lr))
    )


def test_matches_numpy_reference_with_schedule():
    schedule = keras.optimizers.schedules.ExponentialDecay(
        0.05, decay_steps=10, decay_rate=0.5
    )
    grads_seq = gradient_sequence()
    optimizer, reference = make(CONFIGS["decay"], learning_rate=schedule)
    ours, _ = harness.run_keras(optimizer, grads_seq, initial_params())
    oracle = run_numpy(reference, grads_seq, lambda s: 0.05 * 0.5 ** (s / 10))
    assert_trajectories_close(ours, oracle)


def _optax_lamb(learning_rate, weight_decay=0.0, mask=None):
    import optax

    return optax.lamb(
        learning_rate,
        b1=0.9,
        b2=0.999,
        eps=1e-6,
        eps_root=0.0,
        weight_decay=weight_decay,
        mask=mask,
    )


OPTAX_CASES = {
    "no_decay": ("defaults", dict()),
    "decay": ("decay", dict(weight_decay=0.1)),
    # optax masks decay only; its trust ratio applies to every variable.
    "masked_decay": (
        "decay_exclusions_adapt_everything",
        dict(weight_decay=0.1, mask=masks(["w0", "w3"])),
    ),
}


@pytest.mark.parametrize("name", sorted(OPTAX_CASES))
def test_matches_optax_lamb(name):
    config_name, optax_kwargs = OPTAX_CASES[name]
    grads_seq = gradient_sequence()
    optimizer, _ = make(CONFIGS[config_name])
    ours, _ = harness.run_keras(optimizer, grads_seq, initial_params())
    lr = CONFIGS[config_name][0]["learning_rate"]
    oracle = harness.run_optax(
        _optax_lamb(lr, **optax_kwargs), initial_params(), grads_seq
    )
    assert_trajectories_close(ours, oracle)


def test_matches_optax_lamb_with_schedule():
    import optax

    schedule = keras.optimizers.schedules.ExponentialDecay(
        0.05, decay_steps=10, decay_rate=0.5
    )
    grads_seq = gradient_sequence()
    optimizer, _ = make(CONFIGS["decay"], learning_rate=schedule)
    ours, _ = harness.run_keras(optimizer, grads_seq, initial_params())
    oracle = harness.run_optax(
        _optax_lamb(optax.exponential_decay(0.05, 10, 0.5), weight_decay=0.1),
        initial_params(),
        grads_seq,
    )
    assert_trajectories_close(ours, oracle)


def _keras_lamb_trajectory(weight_decay, grads_seq):
    keras_lamb = keras.optimizers.Lamb(
        learning_rate=0.01, epsilon=1e-6, weight_decay=weight_decay
    )
    trajectory, _ = harness.run_keras(keras_lamb, grads_seq, initial_params())
    return trajectory


def test_equals_keras_lamb_without_weight_decay():
    grads_seq = gradient_sequence()
    ours, _ = harness.run_keras(Lamb(0.01), grads_seq, initial_params())
    assert_trajectories_close(ours, _keras_lamb_trajectory(0.0, grads_seq))


def test_keras_lamb_with_weight_decay_is_the_decoupled_variant():
    """The documented difference: Keras decays outside the trust ratio."""
    grads_seq = gradient_sequence()
    keras_lamb = _keras_lamb_trajectory(0.1, grads_seq)
    decoupled = LambNumpy(
        initial_params(), weight_decay=0.1, variant="decay_outside_trust"
    )
    assert_trajectories_close(
        keras_lamb, run_numpy(decoupled, grads_seq, constant(0.01))
    )
    ours, _ = harness.run_keras(
        Lamb(0.01, weight_decay=0.1), grads_seq, initial_params()
    )
    assert max_rel_error(ours, keras_lamb) > 100.0


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "correct"])
def test_oracle_detects_each_perturbation(variant):
    """Each plausible porting mistake moves the result far outside RTOL."""
    kwargs = dict(weight_decay=0.1, epsilon=0.1)
    grads_seq = gradient_sequence()
    optimizer = Lamb(0.02, **kwargs)
    optimizer.exclude_from_weight_decay(var_names=["w0"])
    ours, _ = harness.run_keras(optimizer, grads_seq, initial_params())

    def reference(variant):
        return run_numpy(
            LambNumpy(
                initial_params(),
                decay_mask=masks(["w0"]),
                variant=variant,
                **kwargs,
            ),
            grads_seq,
            constant(0.02),
        )

    assert max_rel_error(ours, reference("correct")) <= 1.0
    assert max_rel_error(ours, reference(variant)) > 100.0


def test_golden_single_step_from_keras_tests():
    """keras/src/optimizers/lamb_test.py::test_single_step: lr 0.5,
    w=[1,2,3,4], g=[1,6,7,2] -> [-0.3693, 0.6306, 1.6306, 2.6306]."""
    variable = keras.Variable([1.0, 2.0, 3.0, 4.0])
    Lamb(0.5).apply([keras.ops.array([1.0, 6.0, 7.0, 2.0])], [variable])
    np.testing.assert_allclose(
        to_numpy(variable), [-0.3693, 0.6306, 1.6306, 2.6306], atol=1e-4
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_norms_are_float32_for_low_precision_variables(dtype):
    """||w|| of 64 entries of 300 is 2400; in float16 its sum of squares
    (5.76e6) overflows. Step 1 has u = g / (|g| + eps) = 1 per entry, so
    the ratio is 2400 / 8 = 300 and w becomes 300 - 0.01 * 300 = 297."""
    variable = keras.Variable(np.full((64,), 300.0), dtype=dtype)
    Lamb(0.01).apply([keras.ops.ones((64,), dtype=dtype)], [variable])
    result = to_numpy(variable).astype("float64")
    assert np.all(np.isfinite(result))
    np.testing.assert_allclose(result, 297.0, atol=1.0)


def test_exclusions_survive_serialization():
    optimizer = Lamb(exclude_from_layer_adaptation=["bias", "norm"])
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert clone.exclude_from_layer_adaptation == ["bias", "norm"]


@keras.saving.register_keras_serializable(package="keras_batchopt_tests")
def exclude_rank_one(variable):
    return len(variable.shape) <= 1


def test_registered_callable_exclusion_survives_serialization():
    optimizer = Lamb(exclude_from_layer_adaptation=exclude_rank_one)
    clone = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert clone.exclude_from_layer_adaptation is exclude_rank_one
    variables = [keras.Variable(np.ones(s, "float32")) for s in SHAPES]
    clone.build(variables)
    assert clone._adapts == (False, True, True, False)


def test_exclusion_patterns_match_layer_paths():
    model = keras.Sequential(
        name="sequential",
        layers=[
            keras.Input((4,)),
            keras.layers.Dense(3, name="dense"),
            keras.layers.LayerNormalization(name="norm"),
        ],
    )
    optimizer = Lamb(exclude_from_layer_adaptation=["bias", "norm/"])
    optimizer.build(model.trainable_variables)
    adapted = {
        v.path: a for v, a in zip(model.trainable_variables, optimizer._adapts)
    }
    assert adapted == {
        "sequential/dense/kernel": True,
        "sequential/dense/bias": False,
        "sequential/norm/gamma": False,
        "sequential/norm/beta": False,
    }


BAD_ARGUMENTS = [
    (dict(learning_rate=-1e-3), "learning_rate", "-0.001"),
    (dict(beta_1=1.0), "beta_1", "[0, 1)"),
    (dict(beta_2=-0.5), "beta_2", "-0.5"),
    (dict(epsilon=0.0), "epsilon", "> 0"),
    (dict(weight_decay=-0.1), "weight_decay", ">= 0"),
    (dict(max_trust_ratio=0.0), "max_trust_ratio", "> 0"),
    (dict(max_trust_ratio=float("nan")), "max_trust_ratio", "nan"),
    (dict(bias_correction="yes"), "bias_correction", "bool"),
    (
        dict(exclude_from_layer_adaptation=5),
        "exclude_from_layer_adaptation",
        "regular expressions",
    ),
    (
        dict(exclude_from_layer_adaptation=["bias", "("]),
        "exclude_from_layer_adaptation",
        "not a valid regular expression",
    ),
]


@pytest.mark.parametrize("kwargs,name,fragment", BAD_ARGUMENTS)
def test_bad_arguments_raise_clear_errors(kwargs, name, fragment):
    harness.assert_clear_error(Lamb, kwargs, name, fragment)
