"""AdaHessian against the NumPy reference of the official update, on
every backend: the optimizer alone (given Hessian-vector products), and
through `fit` with the Hessian training step on separable quadratics,
where the Hutchinson estimate is exact (`|Hz| = 2a` for any probe), so
the trajectory does not depend on the seed.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_batchopt
from keras_batchopt.optimizers import AdaHessian
from tests.conftest import BACKEND
from tests.conftest import to_numpy
from tests.optimizers import oracle_harness as harness
from tests.optimizers.oracle_harness import assert_trajectories_close
from tests.optimizers.oracle_harness import max_rel_error
from tests.references.ada_hessian_numpy import VARIANTS
from tests.references.ada_hessian_numpy import AdaHessianNumpy

# A bias, a dense kernel, a 2-D and a 1-D convolution kernel (Keras's
# (*spatial, in, out) layouts).
SHAPES = [(5,), (4, 3), (3, 3, 2, 4), (3, 2, 2)]
STEPS = 40
LR = 0.05


def hessian_sequence(steps=STEPS, seed=7):
    """Signed Hessian-vector products, of order 1 and away from zero."""
    rng = np.random.RandomState(seed)
    return [
        [
            (rng.randn(*s) + np.sign(rng.randn(*s)) * 0.5).astype("float32")
            for s in SHAPES
        ]
        for _ in range(steps)
    ]


def run_ours(optimizer, grads_seq, hvps_seq, lr_fn=None):
    variables = [
        keras.Variable(p, name=f"w{i}")
        for i, p in enumerate(harness.initial_params(SHAPES))
    ]
    trajectory = []
    for step, (grads, hvps) in enumerate(zip(grads_seq, hvps_seq)):
        if lr_fn is not None:
            optimizer.learning_rate = lr_fn(step)
        with optimizer.using_hessian(
            [ops.convert_to_tensor(h) for h in hvps], variables
        ):
            optimizer.apply(
                [ops.convert_to_tensor(g) for g in grads], variables
            )
        trajectory.append([to_numpy(v) for v in variables])
    return trajectory


def run_reference(reference, grads_seq, hvps_seq, lr_fn):
    trajectory = []
    for step, (grads, hvps) in enumerate(zip(grads_seq, hvps_seq)):
        reference.step(grads, hvps, lr_fn(step))
        trajectory.append([p.copy() for p in reference.params])
    return trajectory


CONFIGS = {
    "defaults": {},
    "decay": dict(weight_decay=0.05),
    "hessian_power": dict(hessian_power=0.5),
    "spatial_and_input": dict(hessian_averaging="spatial_and_input"),
    "no_averaging": dict(hessian_averaging="none"),
    "block_size": dict(hessian_averaging=4),
    "update_interval": dict(hessian_update_interval=3, weight_decay=0.05),
    "betas_eps": dict(beta_1=0.5, beta_2=0.9, epsilon=1e-2),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_numpy_reference(name):
    kwargs = CONFIGS[name]
    grads_seq = harness.gradient_sequence(SHAPES, STEPS)
    hvps_seq = hessian_sequence()
    ours = run_ours(AdaHessian(LR, **kwargs), grads_seq, hvps_seq)
    reference = AdaHessianNumpy(harness.initial_params(SHAPES), **kwargs)
    assert_trajectories_close(
        ours, run_reference(reference, grads_seq, hvps_seq, lambda s: LR)
    )


def test_matches_numpy_reference_with_schedule_and_exclusions():
    schedule = keras.optimizers.schedules.ExponentialDecay(
        LR, decay_steps=10, decay_rate=0.5
    )
    optimizer = AdaHessian(schedule, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["w0", "w3"])
    grads_seq = harness.gradient_sequence(SHAPES, STEPS)
    hvps_seq = hessian_sequence()
    reference = AdaHessianNumpy(
        harness.initial_params(SHAPES),
        weight_decay=0.1,
        decay_mask=[False, True, True, False],
    )
    assert_trajectories_close(
        run_ours(optimizer, grads_seq, hvps_seq),
        run_reference(
            reference, grads_seq, hvps_seq, lambda s: LR * 0.5 ** (s / 10)
        ),
    )


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "correct"])
def test_oracle_detects_each_perturbation(variant):
    """Each plausible porting mistake moves the result far outside RTOL."""
    kwargs = dict(weight_decay=0.05, hessian_power=0.7)
    if variant == "step_count_bias_correction":
        kwargs["hessian_update_interval"] = 3
    grads_seq = harness.gradient_sequence(SHAPES, STEPS)
    hvps_seq = hessian_sequence()
    ours = run_ours(AdaHessian(LR, **kwargs), grads_seq, hvps_seq)

    def reference(variant):
        return run_reference(
            AdaHessianNumpy(
                harness.initial_params(SHAPES), variant=variant, **kwargs
            ),
            grads_seq,
            hvps_seq,
            lambda s: LR,
        )

    assert max_rel_error(ours, reference("correct")) <= 1.0
    assert max_rel_error(ours, reference(variant)) > 100.0


def test_gradient_accumulation_averages_the_hessian_estimates():
    grads_seq = harness.gradient_sequence(SHAPES, 12)
    hvps_seq = hessian_sequence(12)
    ours = run_ours(
        AdaHessian(LR, gradient_accumulation_steps=3), grads_seq, hvps_seq
    )
    mean_grads, mean_hvps = [], []
    for i in range(0, 12, 3):
        mean_grads.append(
            [sum(grads_seq[i + j][k] for j in range(3)) / 3 for k in range(4)]
        )
        mean_hvps.append(
            [
                sum(np.abs(hvps_seq[i + j][k]) for j in range(3)) / 3
                for k in range(4)
            ]
        )
    reference = AdaHessianNumpy(harness.initial_params(SHAPES))
    expected = run_reference(reference, mean_grads, mean_hvps, lambda s: LR)
    assert_trajectories_close(ours[2::3], expected, rtol=2e-5)


# --- Through `fit`: the Hessian training step on a separable quadratic ---

COEFFICIENTS = [
    np.random.RandomState(3).uniform(0.5, 2.0, size=s).astype("float32")
    for s in SHAPES
]


class SeparableQuadratic(keras.layers.Layer):
    """Outputs `sum_i a_i w_i**2` for every sample: the loss below is that
    sum, whose Hessian is `diag(2a)`."""

    def build(self, input_shape):
        rng = np.random.RandomState(1)
        self.ws = [
            self.add_weight(
                shape=s,
                initializer=keras.initializers.Constant(rng.randn(*s)),
                name=f"w{i}",
            )
            for i, s in enumerate(SHAPES)
        ]

    def call(self, x):
        total = sum(
            ops.sum(ops.convert_to_tensor(a) * ops.square(w))
            for a, w in zip(COEFFICIENTS, self.ws)
        )
        return ops.zeros_like(x[:, :1]) + total


def mean_output(y_true, y_pred):
    return ops.mean(y_pred)


def quadratic_model(optimizer, wire="function", jit=True):
    inputs = keras.Input((2,))
    outputs = SeparableQuadratic()(inputs)
    if wire == "mixin":

        class Wired(keras_batchopt.curvature.HessianTrainStep, keras.Model):
            pass

        model = Wired(inputs, outputs)
    else:
        model = keras.Model(inputs, outputs)
        keras_batchopt.curvature.enable_hessian_training(model)
    model.compile(
        optimizer=optimizer,
        loss=mean_output,
        jit_compile=jit and BACKEND != "torch",
    )
    return model


def quadratic_reference(steps, lr, **kwargs):
    rng = np.random.RandomState(1)
    reference = AdaHessianNumpy([rng.randn(*s) for s in SHAPES], **kwargs)
    trajectory = []
    for _ in range(steps):
        grads = [2 * a * p for a, p in zip(COEFFICIENTS, reference.params)]
        hvps = [2 * a.astype(np.float64) for a in COEFFICIENTS]
        reference.step(grads, hvps, lr)
        trajectory.append([p.copy() for p in reference.params])
    return trajectory


def fit_trajectory(model, steps):
    x, y = np.ones((4, 2), "float32"), np.zeros((4, 1), "float32")
    trajectory = []
    for _ in range(steps):
        model.train_on_batch(x, y)
        trajectory.append([to_numpy(w) for w in model.trainable_weights])
    return trajectory


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(weight_decay=0.05, hessian_power=0.5),
        dict(hessian_update_interval=3),
    ],
    ids=["defaults", "decay_power", "update_interval"],
)
def test_fit_on_separable_quadratic_matches_reference(kwargs):
    steps = 20
    model = quadratic_model(AdaHessian(0.05, seed=0, **kwargs))
    assert_trajectories_close(
        fit_trajectory(model, steps), quadratic_reference(steps, 0.05, **kwargs)
    )


def test_fit_with_update_interval_without_jit_compile():
    """TensorFlow's graph mode skips the product in a `tf.cond`."""
    model = quadratic_model(
        AdaHessian(0.05, seed=0, hessian_update_interval=3), jit=False
    )
    assert_trajectories_close(
        fit_trajectory(model, 10),
        quadratic_reference(10, 0.05, hessian_update_interval=3),
    )


def test_fit_is_seed_independent_on_separable_quadratic_and_mixin_works():
    runs = [
        fit_trajectory(quadratic_model(AdaHessian(0.05, seed=s), wire), 10)
        for s, wire in ((0, "function"), (123, "mixin"))
    ]
    assert_trajectories_close(runs[0], runs[1], rtol=1e-6, atol=1e-7)


def test_fit_with_loss_scaling_unscales_the_hessian():
    optimizer = keras.optimizers.LossScaleOptimizer(
        AdaHessian(0.05, seed=0), initial_scale=2.0**8
    )
    model = quadratic_model(optimizer)
    assert_trajectories_close(
        fit_trajectory(model, 10), quadratic_reference(10, 0.05)
    )


def test_training_step_estimate_equals_closed_form_hessian_times_probe():
    """Logistic regression: `H = mean p(1-p) [x;1][x;1]^T` is not diagonal,
    so the stored `(1-beta_2) |Hz|**2` after one step identifies `Hz` for
    the probe `rademacher_probes(variables, seed, 0)`."""
    rng = np.random.RandomState(0)
    x = rng.randn(16, 3).astype("float32")
    y = (rng.rand(16, 1) > 0.5).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.layers[0].set_weights(
        [rng.randn(3, 1).astype("float32"), np.array([0.3], "float32")]
    )
    keras_batchopt.curvature.enable_hessian_training(model)
    optimizer = AdaHessian(0.1, beta_2=0.5, seed=12)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        jit_compile=BACKEND != "torch",
    )
    kernel, bias = [w.astype(np.float64) for w in model.get_weights()]
    x_tilde = np.concatenate([x, np.ones((16, 1))], axis=1).astype(np.float64)
    p = 1 / (1 + np.exp(-(x.astype(np.float64) @ kernel + bias)))
    hessian = (x_tilde * (p * (1 - p))).T @ x_tilde / 16
    z = np.concatenate(
        [
            to_numpy(t).ravel()
            for t in keras_batchopt.curvature.rademacher_probes(
                model.trainable_variables, 12, 0
            )
        ]
    )
    assert set(np.unique(z)) == {-1.0, 1.0}
    expected = np.abs(hessian @ z)
    model.train_on_batch(x, y)
    stored = np.concatenate(
        [to_numpy(v).ravel() for v in optimizer._hessian_averages]
    )
    np.testing.assert_allclose(
        np.sqrt(stored / 0.5), expected, rtol=1e-4, atol=1e-6
    )
    # A probe is not the diagonal: Hz differs from diag(H) here.
    assert not np.allclose(expected, np.abs(np.diag(hessian)), rtol=0.05)


def test_fit_without_the_hessian_step_raises_a_clear_error():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=AdaHessian(), loss="mse")
    with pytest.raises(ValueError, match="enable_hessian_training"):
        model.fit(np.ones((4, 3)), np.zeros((4, 1)), verbose=0)
    with pytest.raises(ValueError, match="using_hessian"):
        AdaHessian().apply(
            [ops.ones((2,))], [keras.Variable(np.zeros(2, "float32"))]
        )


def test_other_optimizers_keep_keras_training_step():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    keras_batchopt.curvature.enable_hessian_training(model)
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(np.ones((8, 3)), np.zeros((8, 1)), verbose=0)
    assert np.isfinite(history.history["loss"]).all()


@pytest.mark.parametrize(
    "kwargs, name, fragment",
    [
        (dict(beta_1=1.0), "beta_1", "in [0, 1)"),
        (dict(beta_2=-0.1), "beta_2", "in [0, 1)"),
        (dict(epsilon=-1.0), "epsilon", ">= 0"),
        (dict(hessian_power=0.0), "hessian_power", "in (0, 1]"),
        (dict(hessian_power=1.5), "hessian_power", "in (0, 1]"),
        (dict(hessian_averaging="rows"), "hessian_averaging", "'spatial'"),
        (dict(hessian_averaging=0), "hessian_averaging", "block size"),
        (dict(hessian_update_interval=0), "hessian_update_interval", ">= 1"),
        (dict(seed=-1), "seed", ">= 0"),
        (dict(weight_decay=-0.1), "weight_decay", ">= 0"),
    ],
)
def test_bad_arguments(kwargs, name, fragment):
    harness.assert_clear_error(AdaHessian, kwargs, name, fragment)


def test_block_size_must_divide_every_variable():
    optimizer = AdaHessian(hessian_averaging=4)
    with pytest.raises(ValueError, match="must divide"):
        optimizer.build([keras.Variable(np.zeros((2, 3), "float32"))])
