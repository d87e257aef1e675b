"""Adan against independent oracles, over many steps, on every backend.

Oracle: the NumPy reference in tests/references, on every backend. On the
torch backend, test_adan_torch_peers.py adds the peer implementations.
optax.adan is not an oracle: it weights the difference term by 1 - b2
(see test_optax_differs_as_documented).
"""

import keras
import numpy as np
import pytest

from keras_batchopt.optimizers import Adan
from tests.conftest import to_numpy
from tests.optimizers import oracle_harness as harness
from tests.optimizers.oracle_harness import ATOL
from tests.optimizers.oracle_harness import RTOL
from tests.optimizers.oracle_harness import assert_trajectories_close
from tests.optimizers.oracle_harness import max_rel_error
from tests.optimizers.oracle_harness import run_numpy
from tests.references.adan_numpy import VARIANTS
from tests.references.adan_numpy import AdanNumpy

SHAPES = [(7,), (5, 3), (2, 3, 3, 2)]
STEPS = 60


def gradient_sequence(steps, seed=0, scale=1.0):
    return harness.gradient_sequence(SHAPES, steps, seed, scale)


def initial_params(seed=1):
    return harness.initial_params(SHAPES, seed)


def run_keras(optimizer, grads_seq, params=None, lr_fn=None):
    params = initial_params() if params is None else params
    return harness.run_keras(optimizer, grads_seq, params, lr_fn)


CONFIGS = {
    "defaults": dict(learning_rate=0.01),
    "prox_decay": dict(learning_rate=0.02, weight_decay=0.1),
    "no_prox_decay": dict(learning_rate=0.02, weight_decay=0.1, no_prox=True),
    "clipping": dict(learning_rate=0.01, max_grad_norm=1.0),
    "clip_and_decay": dict(
        learning_rate=0.01, max_grad_norm=2.0, weight_decay=0.05
    ),
    "other_betas": dict(
        learning_rate=0.05, beta_1=0.9, beta_2=0.8, beta_3=0.95, epsilon=1e-6
    ),
    "restart_every": dict(learning_rate=0.01, restart_every=7),
}


def _reference_for(config, params, variant="correct"):
    kwargs = {k: v for k, v in config.items() if k != "learning_rate"}
    return AdanNumpy(params, variant=variant, **kwargs)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_numpy_reference(name):
    config = CONFIGS[name]
    grads_seq = gradient_sequence(STEPS, scale=3.0 if "clip" in name else 1.0)
    ours, _ = run_keras(Adan(**config), grads_seq)
    reference = _reference_for(config, initial_params())
    lr = config["learning_rate"]
    oracle = run_numpy(reference, grads_seq, lambda step: lr)
    assert_trajectories_close(ours, oracle)


def test_matches_numpy_reference_with_schedule():
    schedule = keras.optimizers.schedules.ExponentialDecay(
        0.05, decay_steps=10, decay_rate=0.5
    )
    grads_seq = gradient_sequence(STEPS)
    ours, _ = run_keras(Adan(schedule, weight_decay=0.1), grads_seq)
    reference = AdanNumpy(initial_params(), weight_decay=0.1)
    oracle = run_numpy(
        reference, grads_seq, lambda step: 0.05 * 0.5 ** (step / 10)
    )
    assert_trajectories_close(ours, oracle)


def test_manual_restart_matches_reference():
    grads_seq = gradient_sequence(30)
    optimizer = Adan(0.01)
    reference = AdanNumpy(initial_params())
    variables = [keras.Variable(p) for p in initial_params()]
    for step, grads in enumerate(grads_seq):
        if step == 12:
            optimizer.restart()
            reference.restart()
        optimizer.apply(
            [keras.ops.convert_to_tensor(g) for g in grads], variables
        )
        reference.step(grads, 0.01)
        for v, p in zip(variables, reference.params):
            np.testing.assert_allclose(
                to_numpy(v), p, rtol=RTOL, atol=ATOL, err_msg=f"{step}"
            )


def test_first_step_difference_is_zero():
    optimizer = Adan(0.1)
    variable = keras.Variable(np.ones(4, "float32"))
    optimizer.apply(
        [keras.ops.convert_to_tensor(np.full(4, 3.0, "float32"))], [variable]
    )
    np.testing.assert_array_equal(to_numpy(optimizer._exp_avg_diffs[0]), 0.0)
    np.testing.assert_allclose(to_numpy(optimizer._prev_grads[0]), 3.0)
    # Bias-corrected m/sqrt(n) is 1 at step 1: the step is exactly lr.
    np.testing.assert_allclose(to_numpy(variable), 0.9, rtol=1e-6)


def test_decay_exclusion_matches_masked_reference():
    grads_seq = gradient_sequence(20)
    params = initial_params()
    optimizer = Adan(0.02, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["w1"])
    ours, _ = run_keras(optimizer, grads_seq, params)
    reference = AdanNumpy(
        params, weight_decay=0.1, decay_mask=[True, False, True]
    )
    assert_trajectories_close(
        ours, run_numpy(reference, grads_seq, lambda s: 0.02)
    )


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "correct"])
def test_oracle_detects_each_perturbation(variant):
    """Each plausible porting mistake moves the result far outside RTOL."""
    config = dict(
        learning_rate=0.02, weight_decay=0.1, max_grad_norm=1.0, epsilon=1e-3
    )
    grads_seq = gradient_sequence(STEPS, scale=3.0)
    ours, _ = run_keras(Adan(**config), grads_seq)
    wrong = run_numpy(
        _reference_for(config, initial_params(), variant),
        grads_seq,
        lambda step: 0.02,
    )
    right = run_numpy(
        _reference_for(config, initial_params()), grads_seq, lambda s: 0.02
    )
    assert max_rel_error(ours, right) <= 1.0
    assert max_rel_error(ours, wrong) > 100.0


def test_optax_differs_as_documented():
    """optax.adan(0.2.8) uses 1 - b2 on the difference term: our reference
    reproduces it with that one change and differs from the official one.
    The numbers are those of `pytorch_optimizer.Adan` 4.1.0 and timm
    1.0.31's `Adan` (bit-equal to each other) and of `optax.adan` 0.2.8 on
    the same float32 data, lr 0.01, default betas, no decay."""
    rng = np.random.RandomState(0)
    p0 = rng.randn(5)
    grads = [rng.randn(5) for _ in range(10)]
    official = AdanNumpy([p0])
    optax_like = AdanNumpy([p0], variant="optax_diff_coefficient")
    for g in grads:
        official.step([g], 0.01)
        optax_like.step([g], 0.01)
    np.testing.assert_allclose(
        official.params[0],
        [1.792523, 0.340121, 0.975353, 2.242535, 1.837693],
        atol=2e-6,
    )
    # optax also puts eps_root=1e-8 inside the square root; that changes
    # nothing at this precision.
    np.testing.assert_allclose(
        optax_like.params[0],
        [1.819309, 0.325199, 0.969117, 2.248057, 1.823242],
        atol=2e-6,
    )
    ours, _ = run_keras_single(p0, grads)
    np.testing.assert_allclose(ours, official.params[0], rtol=RTOL, atol=ATOL)


def run_keras_single(p0, grads):
    variable = keras.Variable(np.asarray(p0, "float32"))
    optimizer = Adan(0.01)
    for g in grads:
        optimizer.apply(
            [keras.ops.convert_to_tensor(np.asarray(g, "float32"))], [variable]
        )
    return to_numpy(variable), optimizer


BAD_ARGUMENTS = [
    (dict(learning_rate=-1e-3), "learning_rate", "-0.001"),
    (dict(beta_1=1.0), "beta_1", "[0, 1)"),
    (dict(beta_1=-0.1), "beta_1", "-0.1"),
    (dict(beta_2=1.5), "beta_2", "1.5"),
    (dict(beta_3=float("nan")), "beta_3", "nan"),
    (dict(epsilon=0.0), "epsilon", "> 0"),
    (dict(epsilon=-1e-8), "epsilon", "-1e-08"),
    (dict(weight_decay=-0.1), "weight_decay", ">= 0"),
    (dict(max_grad_norm=-1.0), "max_grad_norm", ">= 0"),
    (dict(max_grad_norm=float("inf")), "max_grad_norm", "inf"),
    (dict(restart_every=0), "restart_every", "integer >= 1"),
    (dict(restart_every=2.5), "restart_every", "2.5"),
    (dict(no_prox="yes"), "no_prox", "bool"),
    (dict(beta_1="0.9"), "beta_1", "'0.9'"),
]


@pytest.mark.parametrize("kwargs,name,fragment", BAD_ARGUMENTS)
def test_bad_arguments_raise_clear_errors(kwargs, name, fragment):
    harness.assert_clear_error(Adan, kwargs, name, fragment)


class _RestartAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.optimizer.restart()


def test_restart_from_a_callback_during_fit():
    """`restart()` between epochs equals `restart_every` at that boundary."""
    rng = np.random.RandomState(0)
    x = rng.randn(32, 4).astype("float32")
    y = rng.randn(32, 1).astype("float32")
    weights = []
    for optimizer, callbacks in (
        (Adan(0.01), [_RestartAtEpoch(2)]),
        (Adan(0.01, restart_every=8), []),
    ):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=optimizer, loss="mse")
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=3,
            shuffle=False,
            verbose=0,
            callbacks=callbacks,
        )
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
