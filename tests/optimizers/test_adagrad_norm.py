"""AdaGradNorm against independent oracles, over many steps, on every
backend.

Oracles: the NumPy reference written from Ward, Wu and Bottou
(tests/references/adagrad_norm_numpy.py), for every accumulator; and
`torch.optim.Adagrad` with `eps=0` for the coordinate-wise form (run in
torch whatever the Keras backend). None of optax 0.2.8,
pytorch_optimizer 4.1.0, timm 1.0.31 or Keras 3.15 ships AdaGrad-Norm
itself, so the tests also check the invariance to a constant factor on
the loss that the accumulator gives (exact when `b0` is scaled too, nearly
so with `b0` fixed).
"""

import warnings

import keras
import numpy as np
import pytest

from keras_batchopt.optimizers import AdaGradNorm
from tests.conftest import to_numpy
from tests.optimizers import oracle_harness as harness
from tests.optimizers.oracle_harness import assert_trajectories_close
from tests.optimizers.oracle_harness import max_rel_error
from tests.optimizers.oracle_harness import run_numpy
from tests.references.adagrad_norm_numpy import VARIANTS
from tests.references.adagrad_norm_numpy import AdaGradNormNumpy

SHAPES = [(7,), (5, 3), (2, 3, 3, 2), (4,)]
STEPS = 40
RANK_ONE = ["w0", "w3"]
LR = 0.5
MODES = ("global", "per_variable", "coordinate")


def gradient_sequence(steps=STEPS, seed=0, scale=1.0):
    return harness.gradient_sequence(SHAPES, steps, seed, scale=scale)


def initial_params():
    return harness.initial_params(SHAPES)


def masks(names):
    return [f"w{i}" not in names for i in range(len(SHAPES))]


def constant(lr):
    return lambda step: lr


# name -> (our kwargs, names excluded from decay, reference kwargs)
OPTIONS = {
    "defaults": (dict(), [], dict()),
    "decay": (dict(weight_decay=0.2), [], dict(weight_decay=0.2)),
    "decay_exclusions": (
        dict(weight_decay=0.2),
        RANK_ONE,
        dict(weight_decay=0.2, decay_mask=masks(RANK_ONE)),
    ),
    "large_initial_value": (
        dict(initial_accumulator_value=30.0, weight_decay=0.2),
        [],
        dict(initial_accumulator_value=30.0, weight_decay=0.2),
    ),
}


def make(mode, option, learning_rate=LR):
    kwargs, excluded, reference_kwargs = OPTIONS[option]
    optimizer = AdaGradNorm(learning_rate, accumulator=mode, **kwargs)
    if excluded:
        optimizer.exclude_from_weight_decay(var_names=excluded)
    reference = AdaGradNormNumpy(
        initial_params(), accumulator=mode, **reference_kwargs
    )
    return optimizer, reference


def run_ours(optimizer, grads_seq, lr_fn=None, params=None):
    trajectory, _ = harness.run_keras(
        optimizer, grads_seq, params or initial_params(), lr_fn=lr_fn
    )
    return trajectory


@pytest.mark.parametrize("option", sorted(OPTIONS))
@pytest.mark.parametrize("mode", MODES)
def test_matches_numpy_reference(mode, option):
    grads_seq = gradient_sequence()
    optimizer, reference = make(mode, option)
    assert_trajectories_close(
        run_ours(optimizer, grads_seq),
        run_numpy(reference, grads_seq, constant(LR)),
    )


@pytest.mark.parametrize("mode", MODES)
def test_matches_numpy_reference_with_schedule(mode):
    schedule = keras.optimizers.schedules.ExponentialDecay(
        LR, decay_steps=10, decay_rate=0.5
    )
    grads_seq = gradient_sequence()
    optimizer, reference = make(mode, "decay", learning_rate=schedule)
    oracle = run_numpy(reference, grads_seq, lambda s: LR * 0.5 ** (s / 10))
    assert_trajectories_close(run_ours(optimizer, grads_seq), oracle)


@pytest.mark.parametrize("initial", [0.01, 3.0])
def test_coordinate_mode_matches_torch_adagrad_without_eps(initial):
    import torch

    grads_seq = gradient_sequence()
    oracle = harness.run_torch_peer(
        lambda params: torch.optim.Adagrad(
            params, lr=0.05, initial_accumulator_value=initial, eps=0.0
        ),
        initial_params(),
        grads_seq,
    )
    ours = run_ours(
        AdaGradNorm(
            0.05, initial_accumulator_value=initial, accumulator="coordinate"
        ),
        grads_seq,
    )
    assert_trajectories_close(ours, oracle)


def test_global_accumulator_holds_b_squared():
    """After n steps the one accumulator is b0^2 + sum_t ||G_t||^2."""
    grads_seq = gradient_sequence(steps=12)
    optimizer = AdaGradNorm(LR, initial_accumulator_value=0.25)
    run_ours(optimizer, grads_seq)
    expected = 0.25 + sum(
        float(np.sum(g.astype("float64") ** 2))
        for grads in grads_seq
        for g in grads
    )
    slots = [v for v in optimizer.variables if "accumulator" in v.name]
    assert len(slots) == 1
    np.testing.assert_allclose(
        float(to_numpy(optimizer._global_accumulator)), expected, rtol=1e-6
    )


@pytest.mark.parametrize("mode", MODES)
def test_variable_without_gradient_is_skipped(mode):
    """A `None` gradient (skipped by Keras with a warning) adds nothing to
    the accumulator and leaves its variable alone."""
    grads_seq = [list(grads) for grads in gradient_sequence(steps=30)]
    for step in range(0, 30, 3):
        grads_seq[step][2] = None
    optimizer = AdaGradNorm(LR, accumulator=mode, weight_decay=0.2)
    variables = [
        keras.Variable(p, name=f"w{i}") for i, p in enumerate(initial_params())
    ]
    trajectory = []
    for grads in grads_seq:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", "Gradients do not exist", UserWarning
            )
            optimizer.apply(
                [
                    None if g is None else keras.ops.convert_to_tensor(g)
                    for g in grads
                ],
                variables,
            )
        trajectory.append([to_numpy(v) for v in variables])
    reference = AdaGradNormNumpy(
        initial_params(), accumulator=mode, weight_decay=0.2
    )
    assert_trajectories_close(
        trajectory, run_numpy(reference, grads_seq, constant(LR))
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("c", [1e-3, 1e3])
def test_exactly_invariant_to_loss_scale_with_scaled_b0(mode, c):
    """Gradients times c and b0^2 times c^2 give b times c, hence the same
    steps lr * g / b (weight decay included)."""
    grads_seq = gradient_sequence()
    scaled = [[g * np.float32(c) for g in grads] for grads in grads_seq]
    plain = run_ours(
        AdaGradNorm(LR, accumulator=mode, weight_decay=0.2), grads_seq
    )
    rescaled = run_ours(
        AdaGradNorm(
            LR,
            initial_accumulator_value=0.01 * c**2,
            accumulator=mode,
            weight_decay=0.2,
        ),
        scaled,
    )
    assert_trajectories_close(rescaled, plain)


@pytest.mark.parametrize("c", [10.0, 1e3])
def test_nearly_invariant_to_loss_scale_with_fixed_b0(c):
    """With b0 fixed, every step of the run on c * g is the step of the
    run on g times sqrt((b0^2 + S_t) / (b0^2 / c^2 + S_t)), S_t the sum of
    squared norms so far: in [1, sqrt(1 + b0^2 / S_1)], S_1 = ||G_1||^2,
    so the first step absorbs c once b0^2 << ||G_1||^2."""
    grads_seq = gradient_sequence()
    scaled = [[g * np.float32(c) for g in grads] for grads in grads_seq]
    params = initial_params()
    plain = run_ours(AdaGradNorm(LR), grads_seq)
    rescaled = run_ours(AdaGradNorm(LR), scaled)
    s1 = sum(float(np.sum(g.astype("float64") ** 2)) for g in grads_seq[0])
    bound = np.sqrt(1.0 + 0.01 / s1)
    previous_plain, previous_scaled = params, params
    for step_plain, step_scaled in zip(plain, rescaled):
        for a0, a1, b0, b1 in zip(
            previous_plain, step_plain, previous_scaled, step_scaled
        ):
            u_plain = (a1 - a0).astype("float64")
            u_scaled = (b1 - b0).astype("float64")
            ratio = np.linalg.norm(u_scaled) / np.linalg.norm(u_plain)
            assert 1.0 - 1e-4 <= ratio <= bound + 1e-4
            cosine = np.dot(u_plain.ravel(), u_scaled.ravel()) / (
                np.linalg.norm(u_plain) * np.linalg.norm(u_scaled)
            )
            assert cosine > 1.0 - 1e-6
        previous_plain, previous_scaled = step_plain, step_scaled
    # And the bound is not vacuous: the steps differ by much less than c.
    assert bound < 1.001


# Each variant is run with the accumulator it perturbs.
VARIANT_MODES = {
    "per_variable_norm": "global",
    "accumulate_after_step": "global",
    "divide_by_b_squared": "global",
    "initial_is_b0": "per_variable",
    "decay_divided_by_b": "coordinate",
}


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "correct"])
def test_oracle_detects_each_perturbation(variant):
    """Each plausible porting mistake moves the result far outside RTOL."""
    mode = VARIANT_MODES[variant]
    kwargs = dict(initial_accumulator_value=2.0, weight_decay=0.2)
    lr_fn = lambda step: LR * 0.95**step  # noqa: E731
    grads_seq = gradient_sequence()
    ours = run_ours(
        AdaGradNorm(LR, accumulator=mode, **kwargs), grads_seq, lr_fn
    )

    def reference(variant):
        return run_numpy(
            AdaGradNormNumpy(
                initial_params(), accumulator=mode, variant=variant, **kwargs
            ),
            grads_seq,
            lr_fn,
        )

    assert max_rel_error(ours, reference("correct")) <= 1.0
    assert max_rel_error(ours, reference(variant)) > 100.0


@pytest.mark.parametrize("mode", MODES)
def test_state_per_accumulator(mode):
    optimizer = AdaGradNorm(accumulator=mode)
    variables = [
        keras.Variable(np.ones((3, 2), "float32"), name="a"),
        keras.Variable(np.ones((2,), "float32"), name="b"),
    ]
    optimizer.build(variables)
    slots = [v for v in optimizer.variables if "accumulator" in v.name]
    shapes = [tuple(v.shape) for v in slots]
    expected = {
        "global": [()],
        "per_variable": [(), ()],
        "coordinate": [(3, 2), (2,)],
    }[mode]
    assert shapes == expected
    for slot in slots:
        np.testing.assert_allclose(to_numpy(slot), 0.01)


BAD_ARGUMENTS = [
    (dict(learning_rate=-1.0), "learning_rate", "-1.0"),
    (dict(initial_accumulator_value=0.0), "initial_accumulator_value", "> 0"),
    (dict(initial_accumulator_value=-1.0), "initial_accumulator_value", "> 0"),
    (dict(initial_accumulator_value="1"), "initial_accumulator_value", "> 0"),
    (dict(accumulator="row"), "accumulator", "'global'"),
    (dict(weight_decay=-1e-4), "weight_decay", ">= 0"),
]


@pytest.mark.parametrize("kwargs,name,fragment", BAD_ARGUMENTS)
def test_bad_arguments_raise_clear_errors(kwargs, name, fragment):
    harness.assert_clear_error(AdaGradNorm, kwargs, name, fragment)
