"""NormalizeAndProject: trajectories against a NumPy reference, the
projected groups, saving and argument checks. The Keras contract (loss
scaling, accumulation, EMA, clipping, schedules, stateless apply) is in
test_contract.py, through contract_cases.py."""

import os

import keras
import numpy as np
import pytest

from keras_batchopt.optimizers import Lars
from keras_batchopt.optimizers import NormalizeAndProject
from keras_batchopt.src.optimizers.normalize_and_project import (
    projection_groups,
)
from tests.conftest import to_numpy
from tests.references import nap_numpy

STEPS = 20


def ln_model(seed=0):
    """Dense -> LayerNorm -> ReLU -> Dense head: the NaP architecture."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(6, name="hidden"),
            keras.layers.LayerNormalization(name="norm"),
            keras.layers.Activation("relu"),
            keras.layers.Dense(3, name="head"),
        ]
    )


def gradients(variables, steps=STEPS, seed=1):
    rng = np.random.RandomState(seed)
    return [
        [rng.randn(*v.shape).astype("float32") for v in variables]
        for _ in range(steps)
    ]


def test_groups_are_kernels_and_joint_scale_offset():
    model = ln_model()
    # Paths without the model's (numbered) name.
    names = [v.path.split("/", 1)[1] for v in model.trainable_variables]
    groups = projection_groups(model.trainable_variables, exclude=["head"])
    assert [[names[i] for i in g] for g in groups] == [
        ["hidden/kernel"],
        ["norm/gamma", "norm/beta"],
    ]
    groups = projection_groups(model.trainable_variables)
    assert [names[i] for i in groups[-1]] == ["head/kernel"]


# Betas of 0.5: Keras's float32 bias corrections `1 - beta**t` are then
# exact (with 0.999 they carry relative errors up to ~3e-5, Keras's
# rounding, not the projection's).
INNERS = {
    "adam": lambda: keras.optimizers.Adam(0.05, beta_1=0.5, beta_2=0.5),
    "sgd": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
}


@pytest.mark.parametrize("inner", sorted(INNERS))
def test_trajectory_matches_numpy_reference(inner):
    model = ln_model()
    variables = model.trainable_variables
    # Start the scale and offset off their initial values, as after
    # training, so that their joint norm is not sqrt(units) by accident.
    variables[2].assign(np.linspace(0.5, 1.5, 6).astype("float32"))
    variables[3].assign(np.linspace(-0.3, 0.4, 6).astype("float32"))
    initial = [to_numpy(v) for v in variables]
    grads_seq = gradients(variables)
    optimizer = NormalizeAndProject(INNERS[inner](), exclude=["head"])
    ours = []
    for grads in grads_seq:
        optimizer.apply(
            [keras.ops.convert_to_tensor(g) for g in grads], variables
        )
        ours.append([to_numpy(v) for v in variables])
    groups = projection_groups(variables, exclude=["head"])
    kwargs = dict(
        groups=groups, inner=inner, learning_rate=0.05, beta_1=0.5, beta_2=0.5
    )
    expected = nap_numpy.nap_trajectory(initial, grads_seq, **kwargs)
    for step, (xs, ys) in enumerate(zip(ours, expected)):
        for x, y in zip(xs, ys):
            np.testing.assert_allclose(
                x, y, rtol=1e-5, atol=1e-6, err_msg=f"step {step}"
            )
    # The norms are held (the head, unprojected, is not).
    kernel = ours[-1][0]
    np.testing.assert_allclose(
        np.linalg.norm(kernel), np.linalg.norm(initial[0]), rtol=1e-6
    )
    assert not np.isclose(
        np.linalg.norm(ours[-1][4]), np.linalg.norm(initial[4]), rtol=1e-3
    )
    for variant in nap_numpy.VARIANTS[1:]:
        mistaken = nap_numpy.nap_trajectory(
            initial, grads_seq, variant=variant, **kwargs
        )
        assert not all(
            np.allclose(x, y, rtol=1e-5, atol=1e-6)
            for x, y in zip(ours[-1], mistaken[-1])
        ), variant


def fit_some(model, x, y, steps):
    for i in range(steps):
        model.train_on_batch(x[i], y[i])


def test_save_load_keeps_initial_norms_and_resumes(tmp_path):
    rng = np.random.RandomState(3)
    x = rng.randn(6, 16, 4).astype("float32")
    y = rng.randn(6, 16, 3).astype("float32")

    def compiled():
        model = ln_model()
        model.compile(
            optimizer=NormalizeAndProject(
                keras.optimizers.AdamW(0.05, weight_decay=0.1),
                exclude=["head"],
            ),
            loss="mse",
        )
        return model

    straight = compiled()
    fit_some(straight, x, y, 6)
    interrupted = compiled()
    fit_some(interrupted, x, y, 3)
    path = os.path.join(tmp_path, "nap.keras")
    interrupted.save(path)
    saved_norms = [to_numpy(v) for v in interrupted.optimizer._initial_norms]
    del interrupted
    keras.backend.clear_session()
    resumed = keras.models.load_model(path)  # no custom_objects
    assert type(resumed.optimizer) is NormalizeAndProject
    assert isinstance(resumed.optimizer.inner_optimizer, keras.optimizers.AdamW)
    restored = [to_numpy(v) for v in resumed.optimizer._initial_norms]
    np.testing.assert_array_equal(restored, saved_norms)
    assert all(n > 0 for n in restored)
    fit_some(resumed, x[3:], y[3:], 3)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fit_under_loss_scaling_keeps_the_norms():
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = ln_model()
    kernel = model.get_layer("hidden").kernel
    before = np.linalg.norm(to_numpy(kernel))
    model.compile(
        optimizer=keras.optimizers.LossScaleOptimizer(
            NormalizeAndProject(keras.optimizers.Adam(0.05), exclude=["head"])
        ),
        loss="mse",
    )
    rng = np.random.RandomState(0)
    x = rng.randn(64, 4).astype("float32")
    y = rng.randn(64, 3).astype("float32")
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    after = np.linalg.norm(to_numpy(kernel))
    np.testing.assert_allclose(after, before, rtol=1e-5)
    # The inner optimizer counts the applied steps on every Keras version
    # (Keras 3.8's LossScaleOptimizer does not count its own).
    assert model.optimizer.inner_optimizer.iterations.numpy() == 8


def test_wraps_our_optimizers_too():
    model = ln_model()
    optimizer = NormalizeAndProject(Lars(0.5), exclude=["head"])
    variables = model.trainable_variables
    before = np.linalg.norm(to_numpy(variables[0]))
    for grads in gradients(variables, steps=3):
        optimizer.apply(
            [keras.ops.convert_to_tensor(g) for g in grads], variables
        )
    np.testing.assert_allclose(
        np.linalg.norm(to_numpy(variables[0])), before, rtol=1e-5
    )
    assert int(to_numpy(optimizer.iterations)) == 3


def test_bad_arguments_name_the_argument_and_value():
    with pytest.raises(ValueError, match="`optimizer` must be a keras"):
        NormalizeAndProject("adam")
    with pytest.raises(ValueError, match="Received: optimizer=<keras"):
        NormalizeAndProject(
            keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD())
        )
    with pytest.raises(ValueError, match="weight_decay"):
        NormalizeAndProject(keras.optimizers.SGD(), weight_decay=0.1)
