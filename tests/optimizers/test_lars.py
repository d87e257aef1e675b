"""Lars against independent oracles, over many steps, on every backend.

Oracles: the NumPy reference written from SimCLR's LARS
(tests/references/lars_numpy.py), `optax.lars` (run in JAX whatever the
Keras backend) and timm's `Lars(always_adapt=True)` (run in torch whatever
the Keras backend) in the cases where they agree with the paper form: a
constant learning rate (timm keeps it
outside the momentum buffer) and `trust_mode="sum_of_norms"` once weight
decay is on.
"""

import keras
import numpy as np
import pytest

from keras_batchopt.optimizers import Lars
from tests.conftest import to_numpy
from tests.optimizers import oracle_harness as harness
from tests.optimizers.oracle_harness import assert_trajectories_close
from tests.optimizers.oracle_harness import max_rel_error
from tests.optimizers.oracle_harness import run_numpy
from tests.peers import timm_optimizer
from tests.references.lars_numpy import VARIANTS
from tests.references.lars_numpy import LarsNumpy

# w1 is a zero-initialized matrix: its first trust ratio takes the zero-norm
# guard; w0 and w3 are rank 1 (not adapted by default).
SHAPES = [(7,), (5, 3), (2, 3, 3, 2), (4,)]
STEPS = 60
RANK_ONE = ["w0", "w3"]


def gradient_sequence(steps=STEPS, seed=0):
    return harness.gradient_sequence(SHAPES, steps, seed)


def initial_params():
    return harness.initial_params(SHAPES, zero=(1,))


def masks(names):
    """True for the variables w0..w3 not named in `names`."""
    return [f"w{i}" not in names for i in range(len(SHAPES))]


def constant(lr):
    return lambda step: lr


# The learning rate keeps the rank-1 variables, which take plain momentum
# steps, of order 1, where float32 rounding stays inside ATOL; the trust
# coefficient makes the adapted variables move visibly in 60 steps.
LR = 0.05
ETA = 0.02
BASE = dict(learning_rate=LR, trust_coefficient=ETA)

# name -> (our kwargs, names excluded from decay, reference kwargs)
CONFIGS = {
    "defaults": (dict(learning_rate=LR), [], {}),
    "decay": (
        dict(BASE, weight_decay=0.1),
        [],
        dict(weight_decay=0.1, trust_coefficient=ETA),
    ),
    "decay_exclusions": (
        dict(BASE, weight_decay=0.1),
        RANK_ONE,
        dict(
            weight_decay=0.1,
            trust_coefficient=ETA,
            decay_mask=masks(RANK_ONE),
        ),
    ),
    "nesterov": (
        dict(BASE, weight_decay=0.1, nesterov=True),
        [],
        dict(weight_decay=0.1, trust_coefficient=ETA, nesterov=True),
    ),
    "sum_of_norms": (
        dict(BASE, weight_decay=0.1, trust_mode="sum_of_norms"),
        [],
        dict(
            weight_decay=0.1, trust_coefficient=ETA, trust_mode="sum_of_norms"
        ),
    ),
    "larc": (
        dict(BASE, weight_decay=0.1, larc=True),
        [],
        dict(weight_decay=0.1, trust_coefficient=ETA, larc=True),
    ),
    "no_momentum": (
        dict(BASE, weight_decay=0.1, momentum=0.0),
        [],
        dict(weight_decay=0.1, trust_coefficient=ETA, momentum=0.0),
    ),
    "epsilon": (
        dict(BASE, epsilon=0.5),
        [],
        dict(trust_coefficient=ETA, epsilon=0.5),
    ),
    "adapt_everything": (
        dict(BASE, weight_decay=0.1, exclude_from_layer_adaptation=[]),
        [],
        dict(weight_decay=0.1, trust_coefficient=ETA, adapt_mask=[True] * 4),
    ),
    "adaptation_regex": (
        dict(BASE, weight_decay=0.1, exclude_from_layer_adaptation=["w2"]),
        [],
        dict(weight_decay=0.1, trust_coefficient=ETA, adapt_mask=masks(["w2"])),
    ),
}


def make(config, learning_rate=None):
    kwargs, excluded, reference_kwargs = config
    if learning_rate is not None:
        kwargs = dict(kwargs, learning_rate=learning_rate)
    optimizer = Lars(**kwargs)
    if excluded:
        optimizer.exclude_from_weight_decay(var_names=excluded)
    return optimizer, LarsNumpy(initial_params(), **reference_kwargs)


def run_ours(optimizer, grads_seq):
    trajectory, _ = harness.run_keras(optimizer, grads_seq, initial_params())
    return trajectory


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_numpy_reference(name):
    grads_seq = gradient_sequence()
    optimizer, reference = make(CONFIGS[name])
    lr = CONFIGS[name][0]["learning_rate"]
    assert_trajectories_close(
        run_ours(optimizer, grads_seq),
        run_numpy(reference, grads_seq, constant(lr)),
    )


@pytest.mark.parametrize("config", ["decay", "nesterov"])
def test_matches_numpy_reference_with_schedule(config):
    """With a schedule, the learning rate sits inside the momentum buffer."""
    schedule = keras.optimizers.schedules.ExponentialDecay(
        LR, decay_steps=10, decay_rate=0.5
    )
    grads_seq = gradient_sequence()
    optimizer, reference = make(CONFIGS[config], learning_rate=schedule)
    oracle = run_numpy(reference, grads_seq, lambda s: LR * 0.5 ** (s / 10))
    assert_trajectories_close(run_ours(optimizer, grads_seq), oracle)


def _optax_lars(learning_rate, **kwargs):
    import optax

    return optax.lars(learning_rate, trust_coefficient=ETA, eps=0.0, **kwargs)


OPTAX_CASES = {
    # optax adapts and decays every variable unless masked.
    "no_decay": ("adapt_everything", dict(), 0.0),
    "decay_all": ("adapt_everything", dict(), 0.1),
    "masked_like_the_rank_rule": ("decay_exclusions", dict(), 0.1),
    "nesterov_masked": ("nesterov", dict(nesterov=True), 0.1),
}


@pytest.mark.parametrize("name", sorted(OPTAX_CASES))
def test_matches_optax_lars(name):
    config_name, optax_kwargs, weight_decay = OPTAX_CASES[name]
    kwargs, excluded, _ = CONFIGS[config_name]
    optimizer = Lars(**dict(kwargs, weight_decay=weight_decay))
    adapt_everything = kwargs.get("exclude_from_layer_adaptation") == []
    rank_rule = [len(s) >= 2 for s in SHAPES]
    if not adapt_everything:
        # Decay and adaptation both masked to rank >= 2, in both libraries.
        optimizer.exclude_from_weight_decay(var_names=RANK_ONE)
        optax_kwargs = dict(
            optax_kwargs,
            weight_decay_mask=rank_rule,
            trust_ratio_mask=rank_rule,
        )
    grads_seq = gradient_sequence()
    oracle = harness.run_optax(
        _optax_lars(LR, weight_decay=weight_decay, **optax_kwargs),
        initial_params(),
        grads_seq,
    )
    assert_trajectories_close(run_ours(optimizer, grads_seq), oracle)


def test_matches_optax_lars_with_schedule():
    import optax

    schedule = keras.optimizers.schedules.ExponentialDecay(
        LR, decay_steps=10, decay_rate=0.5
    )
    optimizer = Lars(
        schedule,
        weight_decay=0.1,
        trust_coefficient=ETA,
        exclude_from_layer_adaptation=[],
    )
    grads_seq = gradient_sequence()
    oracle = harness.run_optax(
        _optax_lars(optax.exponential_decay(LR, 10, 0.5), weight_decay=0.1),
        initial_params(),
        grads_seq,
    )
    assert_trajectories_close(run_ours(optimizer, grads_seq), oracle)


# Ours in timm's form: sum of norms, eps 1e-8, every variable adapted.
TIMM_FORM = dict(
    trust_mode="sum_of_norms",
    trust_coefficient=ETA,
    epsilon=1e-8,
    exclude_from_layer_adaptation=[],
)
TIMM_CASES = {
    "no_decay": dict(),
    "decay": dict(weight_decay=0.1),
    "nesterov": dict(weight_decay=0.1, nesterov=True),
    "larc": dict(weight_decay=0.1, larc=True),
}


@pytest.mark.parametrize("name", sorted(TIMM_CASES))
def test_matches_timm_lars_always_adapt(name):
    options = TIMM_CASES[name]
    lr = 0.01 if options.get("larc") else LR
    timm_lars = timm_optimizer("lars", "Lars")
    oracle = harness.run_torch_peer(
        lambda params: timm_lars(
            params,
            lr=lr,
            momentum=0.9,
            weight_decay=options.get("weight_decay", 0.0),
            nesterov=options.get("nesterov", False),
            trust_coeff=ETA,
            eps=1e-8,
            trust_clip=options.get("larc", False),
            always_adapt=True,
        ),
        initial_params(),
        gradient_sequence(),
    )
    ours = run_ours(
        Lars(lr, momentum=0.9, **TIMM_FORM, **options), gradient_sequence()
    )
    assert_trajectories_close(ours, oracle)


def test_timm_differs_under_a_schedule_as_documented():
    """timm keeps the learning rate outside the momentum buffer."""
    timm_lars = timm_optimizer("lars", "Lars")
    lr_fn = lambda step: 0.5**step  # noqa: E731
    grads_seq = gradient_sequence(steps=10)
    timm_run = harness.run_torch_peer(
        lambda params: timm_lars(
            params,
            lr=1.0,
            momentum=0.9,
            trust_coeff=ETA,
            eps=1e-8,
            always_adapt=True,
        ),
        initial_params(),
        grads_seq,
        lr_fn=lr_fn,
    )
    outside = LarsNumpy(
        initial_params(),
        trust_coefficient=ETA,
        epsilon=1e-8,
        adapt_mask=[True] * 4,
        variant="lr_outside_buffer",
    )
    assert_trajectories_close(timm_run, run_numpy(outside, grads_seq, lr_fn))
    ours, _ = harness.run_keras(
        Lars(1.0, **TIMM_FORM), grads_seq, initial_params(), lr_fn=lr_fn
    )
    assert max_rel_error(ours, timm_run) > 100.0


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "correct"])
def test_oracle_detects_each_perturbation(variant):
    """Each plausible porting mistake moves the result far outside RTOL."""
    kwargs = dict(weight_decay=0.1, trust_coefficient=ETA)
    lr_fn = lambda step: LR * 0.95**step  # noqa: E731
    grads_seq = gradient_sequence()
    ours, _ = harness.run_keras(
        Lars(LR, **kwargs), grads_seq, initial_params(), lr_fn=lr_fn
    )

    def reference(variant):
        return run_numpy(
            LarsNumpy(initial_params(), variant=variant, **kwargs),
            grads_seq,
            lr_fn,
        )

    assert max_rel_error(ours, reference("correct")) <= 1.0
    assert max_rel_error(ours, reference(variant)) > 100.0


def test_no_state_without_momentum():
    optimizer = Lars(0.1, momentum=0.0)
    optimizer.build([keras.Variable(np.ones((3, 2), "float32"))])
    names = {v.name for v in optimizer.variables}
    assert names == {"iteration", "learning_rate"}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_norms_are_float32_for_low_precision_variables(dtype):
    """||w|| of 64 entries of 300 is 2400 (its float16 sum of squares
    overflows) and ||g|| = 8, so the ratio is 1e-3 * 2400 / 8 = 0.3 and
    w becomes 300 - 0.3 = 299.7 (299.75 in float16)."""
    variable = keras.Variable(np.full((8, 8), 300.0), dtype=dtype)
    Lars(1.0).apply([keras.ops.ones((8, 8), dtype=dtype)], [variable])
    result = to_numpy(variable).astype("float64")
    assert np.all(np.isfinite(result))
    np.testing.assert_allclose(result, 299.7, atol=1.0)


def test_default_rule_excludes_rank_one_variables_of_a_model():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 2)),
            keras.layers.Conv2D(4, 3),
            keras.layers.BatchNormalization(),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    optimizer = Lars()
    optimizer.build(model.trainable_variables)
    adapted = [
        v.path.split("/", 1)[1]
        for v, a in zip(model.trainable_variables, optimizer._adapts)
        if a
    ]
    assert adapted == ["conv2d/kernel", "dense/kernel"]


BAD_ARGUMENTS = [
    (dict(learning_rate=-1.0), "learning_rate", "-1.0"),
    (dict(momentum=1.0), "momentum", "[0, 1)"),
    (dict(momentum=-0.1), "momentum", "-0.1"),
    (dict(nesterov=1), "nesterov", "bool"),
    (dict(weight_decay=-1e-4), "weight_decay", ">= 0"),
    (dict(trust_coefficient=0.0), "trust_coefficient", "> 0"),
    (dict(epsilon=-1e-8), "epsilon", ">= 0"),
    (dict(trust_mode="sum"), "trust_mode", "'norm_of_sum'"),
    (dict(larc="no"), "larc", "bool"),
    (
        dict(exclude_from_layer_adaptation=[3]),
        "exclude_from_layer_adaptation",
        "regular expressions",
    ),
]


@pytest.mark.parametrize("kwargs,name,fragment", BAD_ARGUMENTS)
def test_bad_arguments_raise_clear_errors(kwargs, name, fragment):
    harness.assert_clear_error(Lars, kwargs, name, fragment)
