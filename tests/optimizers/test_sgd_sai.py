"""SGDSaI against independent oracles, over many steps, on every backend.

Oracles: the NumPy reference written from the official algorithm
(tests/references/sgd_sai_numpy.py) and the official `sgd_sai.SGD_sai`
1.0.3 (PyPI `sgd-sai`, the code of
https://github.com/AnonymousAlethiometer/SGD_SaI), run in torch whatever
the Keras backend, except
with `momentum=0` and late first gradients, where the official code fails.
"""

import warnings

import keras
import numpy as np
import pytest

from keras_batchopt.optimizers import SGDSaI
from tests.conftest import to_numpy
from tests.optimizers import oracle_harness as harness
from tests.optimizers.oracle_harness import assert_trajectories_close
from tests.optimizers.oracle_harness import max_rel_error
from tests.optimizers.oracle_harness import run_numpy
from tests.references.sgd_sai_numpy import VARIANTS
from tests.references.sgd_sai_numpy import SGDSaINumpy

# w3 has one element: its std is taken as 0, so its gSNR is |g| / epsilon
# with `official=True`, and 1 by default.
SHAPES = [(7,), (5, 3), (2, 3, 3, 2), (1,)]
STEPS = 40
RANK_ONE = ["w0", "w3"]
LR = 0.01
# The official code warns on the std of one element (NaN, then 0).
ONE_ELEMENT_STD = pytest.mark.filterwarnings(
    "ignore:std\\(\\).*degrees of freedom:UserWarning"
)


def gradient_sequence(steps=STEPS, seed=0):
    return harness.gradient_sequence(SHAPES, steps, seed)


def initial_params():
    return harness.initial_params(SHAPES)


def masks(names):
    return harness.name_masks(names, len(SHAPES))


constant = harness.constant


# name -> (our kwargs, names excluded from decay, reference kwargs)
CONFIGS = {
    "defaults": (dict(learning_rate=LR), [], dict(weight_decay=0.01)),
    "no_decay": (dict(learning_rate=LR, weight_decay=0.0), [], {}),
    "decay": (
        dict(learning_rate=LR, weight_decay=0.5),
        [],
        dict(weight_decay=0.5),
    ),
    "decay_exclusions": (
        dict(learning_rate=LR, weight_decay=0.5),
        RANK_ONE,
        dict(weight_decay=0.5, decay_mask=masks(RANK_ONE)),
    ),
    "momentum_half": (
        dict(learning_rate=LR, momentum=0.5, weight_decay=0.5),
        [],
        dict(momentum=0.5, weight_decay=0.5),
    ),
    "no_momentum": (
        dict(learning_rate=LR, momentum=0.0, weight_decay=0.5),
        [],
        dict(momentum=0.0, weight_decay=0.5),
    ),
    "epsilon": (
        dict(learning_rate=LR, epsilon=0.5, weight_decay=0.5),
        [],
        dict(epsilon=0.5, weight_decay=0.5),
    ),
    # keras_batchopt's default for one-element and zero-std gradients.
    "degenerate_gsnr_is_one": (
        dict(learning_rate=LR, official=False),
        [],
        dict(weight_decay=0.01, official=False),
    ),
}


def make(config, learning_rate=None):
    kwargs, excluded, reference_kwargs = config
    if learning_rate is not None:
        kwargs = dict(kwargs, learning_rate=learning_rate)
    optimizer = SGDSaI(**{"official": True, **kwargs})
    if excluded:
        optimizer.exclude_from_weight_decay(var_names=excluded)
    return optimizer, SGDSaINumpy(initial_params(), **reference_kwargs)


def run_ours(optimizer, grads_seq, lr_fn=None):
    trajectory, _ = harness.run_keras(
        optimizer, grads_seq, initial_params(), lr_fn=lr_fn
    )
    return trajectory


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_numpy_reference(name):
    grads_seq = gradient_sequence()
    optimizer, reference = make(CONFIGS[name])
    assert_trajectories_close(
        run_ours(optimizer, grads_seq),
        run_numpy(reference, grads_seq, constant(LR)),
    )


@pytest.mark.parametrize("config", ["decay", "no_momentum"])
def test_matches_numpy_reference_with_schedule(config):
    schedule = keras.optimizers.schedules.ExponentialDecay(
        LR, decay_steps=10, decay_rate=0.5
    )
    grads_seq = gradient_sequence()
    optimizer, reference = make(CONFIGS[config], learning_rate=schedule)
    oracle = run_numpy(reference, grads_seq, lambda s: LR * 0.5 ** (s / 10))
    assert_trajectories_close(run_ours(optimizer, grads_seq), oracle)


def _official(params, groups=None, **kwargs):
    from sgd_sai import SGD_sai

    if groups is not None:
        params = [
            {"params": [params[i] for i in indices], **options}
            for indices, options in groups
        ]
    return SGD_sai(params, **kwargs)


# name -> (our kwargs, names excluded from decay, official kwargs, groups)
OFFICIAL_CASES = {
    "defaults": (dict(), [], dict(), None),
    "decay": (
        dict(weight_decay=0.5),
        [],
        dict(weight_decay=0.5),
        None,
    ),
    "momentum_half_epsilon": (
        dict(momentum=0.5, epsilon=1e-3, weight_decay=0.1),
        [],
        dict(momentum=0.5, eps=1e-3, weight_decay=0.1),
        None,
    ),
    "decay_exclusions_as_param_groups": (
        dict(weight_decay=0.5),
        RANK_ONE,
        dict(weight_decay=0.5),
        [([1, 2], {}), ([0, 3], {"weight_decay": 0.0})],
    ),
}


@ONE_ELEMENT_STD
@pytest.mark.parametrize("name", sorted(OFFICIAL_CASES))
@pytest.mark.parametrize("scheduled", [False, True], ids=["constant", "decay"])
def test_matches_official_sgd_sai(name, scheduled):
    ours_kwargs, excluded, official_kwargs, groups = OFFICIAL_CASES[name]
    lr_fn = (lambda s: LR * 0.9**s) if scheduled else constant(LR)
    grads_seq = gradient_sequence(steps=25)
    oracle = harness.run_torch_peer(
        lambda params: _official(params, groups, lr=LR, **official_kwargs),
        initial_params(),
        grads_seq,
        lr_fn=lr_fn,
    )
    optimizer = SGDSaI(LR, official=True, **ours_kwargs)
    if excluded:
        optimizer.exclude_from_weight_decay(var_names=excluded)
    assert_trajectories_close(run_ours(optimizer, grads_seq, lr_fn), oracle)


@ONE_ELEMENT_STD
def test_official_code_agrees_with_the_numpy_reference():
    """The reference is checked against the official code on its own."""
    grads_seq = gradient_sequence(steps=25)
    oracle = harness.run_torch_peer(
        lambda params: _official(params, lr=LR, weight_decay=0.5),
        initial_params(),
        grads_seq,
    )
    reference = SGDSaINumpy(initial_params(), weight_decay=0.5)
    assert_trajectories_close(
        run_numpy(reference, grads_seq, constant(LR)), oracle
    )


def test_gsnr_is_frozen_from_the_first_gradient():
    grads_seq = gradient_sequence(steps=5)
    optimizer = SGDSaI(LR, official=True)
    harness.run_keras(optimizer, grads_seq, initial_params())
    expected = []
    for g in grads_seq[0]:
        g = g.astype("float64")
        std = np.std(g, ddof=1) if g.size > 1 else 0.0
        expected.append(np.linalg.norm(g) / (std + 1e-8))
    got = [float(to_numpy(v)) for v in optimizer._gsnrs]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # The one-element variable: |g| / epsilon.
    np.testing.assert_allclose(
        got[3], abs(float(grads_seq[0][3][0])) / 1e-8, rtol=1e-6
    )


def test_late_first_gradient_takes_its_gsnr_then():
    """A variable without a gradient in the first steps (None, which Keras
    skips with a warning) takes its gSNR and starts its buffer at its first
    gradient; it is neither moved nor decayed before."""
    grads_seq = gradient_sequence(steps=30)
    late = [list(grads) for grads in grads_seq]
    for step in range(3):
        late[step][1] = None
    optimizer = SGDSaI(LR, weight_decay=0.5, official=True)
    variables = [
        keras.Variable(p, name=f"w{i}") for i, p in enumerate(initial_params())
    ]
    trajectory = []
    for step, grads in enumerate(late):
        if step < 3:
            with pytest.warns(UserWarning, match="Gradients do not exist"):
                optimizer.apply(
                    [
                        None if g is None else keras.ops.convert_to_tensor(g)
                        for g in grads
                    ],
                    variables,
                )
            assert float(to_numpy(optimizer._gsnrs[1])) == -1.0
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                optimizer.apply(
                    [keras.ops.convert_to_tensor(g) for g in grads], variables
                )
        trajectory.append([to_numpy(v) for v in variables])
    reference = SGDSaINumpy(initial_params(), weight_decay=0.5)
    oracle = run_numpy(reference, late, constant(LR))
    np.testing.assert_array_equal(trajectory[2][1], initial_params()[1])
    assert_trajectories_close(trajectory, oracle)
    g = grads_seq[3][1].astype("float64")
    np.testing.assert_allclose(
        float(to_numpy(optimizer._gsnrs[1])),
        np.linalg.norm(g) / (np.std(g, ddof=1) + 1e-8),
        rtol=1e-6,
    )


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "correct"])
def test_oracle_detects_each_perturbation(variant):
    """Each plausible porting mistake moves the result far outside RTOL."""
    kwargs = dict(weight_decay=0.5, official=True)
    lr_fn = lambda step: LR * 0.95**step  # noqa: E731
    grads_seq = gradient_sequence()
    ours = run_ours(SGDSaI(LR, **kwargs), grads_seq, lr_fn)

    def reference(variant):
        return run_numpy(
            SGDSaINumpy(initial_params(), variant=variant, **kwargs),
            grads_seq,
            lr_fn,
        )

    assert max_rel_error(ours, reference("correct")) <= 1.0
    assert max_rel_error(ours, reference(variant)) > 100.0


def test_no_buffer_without_momentum():
    optimizer = SGDSaI(0.1, momentum=0.0)
    optimizer.build([keras.Variable(np.ones((3, 2), "float32"), name="w")])
    names = {v.name for v in optimizer.variables}
    assert len(names) == 3
    assert {"iteration", "learning_rate"} < names


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_gsnr_is_float32_for_low_precision_variables(dtype):
    """Entries of 300 and 600: the float16 sum of squares (1.4e7)
    overflows; in float32 the gSNR is ||g|| / std = 3794.7 / 151.19."""
    g = np.tile([300.0, 600.0], 32).reshape(8, 8)
    variable = keras.Variable(np.zeros((8, 8)), dtype=dtype)
    optimizer = SGDSaI(1e-4, weight_decay=0.0)
    optimizer.apply([keras.ops.convert_to_tensor(g, dtype=dtype)], [variable])
    gsnr = float(to_numpy(optimizer._gsnrs[0]))
    expected = np.linalg.norm(g) / np.std(g, ddof=1)
    np.testing.assert_allclose(gsnr, expected, rtol=1e-5)
    assert np.all(np.isfinite(to_numpy(variable).astype("float64")))


@pytest.mark.parametrize("official", [False, True])
def test_regression_head_with_one_output(official):
    """A `Dense(1)` bias has one-element gradients: the default trains it
    (gSNR 1); the official rule (`||g|| / epsilon`) diverges at once."""
    rng = np.random.RandomState(0)
    x = rng.randn(256, 8).astype("float32")
    y = (x @ rng.randn(8, 1) + 3.0).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=SGDSaI(official=official), loss="mse")
    losses = model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    losses = losses.history["loss"]
    if official:
        assert not np.all(np.isfinite(losses)) or losses[-1] > 1e6
    else:
        assert np.all(np.isfinite(losses))
        assert losses[-1] < 0.5 * losses[0]


BAD_ARGUMENTS = [
    (dict(learning_rate=-1.0), "learning_rate", "-1.0"),
    (dict(momentum=1.0), "momentum", "[0, 1)"),
    (dict(momentum=-0.1), "momentum", "-0.1"),
    (dict(epsilon=0.0), "epsilon", "> 0"),
    (dict(epsilon=-1e-8), "epsilon", "> 0"),
    (dict(weight_decay=-1e-4), "weight_decay", ">= 0"),
    (dict(official="yes"), "official", "yes"),
]


@pytest.mark.parametrize("kwargs,name,fragment", BAD_ARGUMENTS)
def test_bad_arguments_raise_clear_errors(kwargs, name, fragment):
    harness.assert_clear_error(SGDSaI, kwargs, name, fragment)
