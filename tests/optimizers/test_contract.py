"""The Keras contract, checked for every optimizer in contract_cases.CASES.

Each test compares against a second run of the same optimizer under a
transformation whose effect Keras defines (clipping, accumulation, EMA,
schedules, loss scaling, save/load), so it holds for any algorithm.
"""

import contextlib
import gc
import inspect
import os
import weakref

import keras
import numpy as np
import pytest

import keras_batchopt
from tests.conftest import BACKEND
from tests.conftest import to_numpy
from tests.optimizers.contract_cases import CASES

SHAPES = [(4, 3), (3,), (3, 2), (2,)]
STEPS = 8

cases = pytest.mark.parametrize("case", CASES, ids=str)


def make_variables(seed=0):
    rng = np.random.RandomState(seed)
    return [
        keras.Variable(rng.randn(*s).astype("float32"), name=f"v{i}")
        for i, s in enumerate(SHAPES)
    ]


def gradients(steps=STEPS, seed=1, scale=1.0):
    rng = np.random.RandomState(seed)
    return [
        [(rng.randn(*s) * scale).astype("float32") for s in SHAPES]
        for _ in range(steps)
    ]


def fixed_hessians(seed=5):
    """Hessian-vector products the harness hands to Hessian optimizers:
    the same every step, so that every contract transformation (loss
    scaling, accumulation, clipping...) leaves them unchanged."""
    rng = np.random.RandomState(seed)
    return [
        keras.ops.convert_to_tensor(rng.randn(*s).astype("float32"))
        for s in SHAPES
    ]


def hessian_scope(optimizer, variables):
    """`using_hessian` for a Hessian optimizer (also inside a
    LossScaleOptimizer), else a no-op."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if getattr(inner, "needs_hessian", False):
        return inner.using_hessian(fixed_hessians(), variables)
    return contextlib.nullcontext()


def wire(model, case):
    """Models trained by a Hessian optimizer get the Hessian step."""
    if case.needs_hessian:
        keras_batchopt.curvature.enable_hessian_training(model)
    return model


def apply_all(optimizer, variables, grads_seq, before_step=None):
    trajectory = []
    for step, grads in enumerate(grads_seq):
        if before_step is not None:
            before_step(step)
        with hessian_scope(optimizer, variables):
            optimizer.apply(
                [keras.ops.convert_to_tensor(g) for g in grads], variables
            )
        trajectory.append([to_numpy(v) for v in variables])
    return trajectory


def stateless_apply_all(optimizer, variables, grads_seq, jit=False):
    """The way the JAX trainer drives an optimizer; with `jit`, each step
    is `jax.jit`-compiled (once), as in the trainer's train step."""
    optimizer.build(variables)
    trainable = [v.value for v in variables]
    opt_values = [v.value for v in optimizer.variables]

    def step(opt_values, grads, trainable):
        with hessian_scope(optimizer, variables):
            return optimizer.stateless_apply(opt_values, grads, trainable)

    if jit:
        import jax

        step = jax.jit(step)
    trajectory = []
    for grads in grads_seq:
        trainable, opt_values = step(
            opt_values,
            [keras.ops.convert_to_tensor(g) for g in grads],
            trainable,
        )
        trajectory.append([to_numpy(t) for t in trainable])
    return trajectory


def assert_close(a, b, rtol=1e-6, atol=1e-6):
    for step, (xs, ys) in enumerate(zip(a, b)):
        for x, y in zip(xs, ys):
            np.testing.assert_allclose(
                x, y, rtol=rtol, atol=atol, err_msg=f"step {step}"
            )


def small_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(3),
        ]
    )


def batches(n=6, seed=2):
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 16, 4).astype("float32")
    y = rng.randint(0, 3, size=(n, 16))
    return x, y


@cases
def test_config_round_trip_and_registration(case):
    optimizer = case.make()
    config = optimizer.get_config()
    init_args = set(inspect.signature(case.cls.__init__).parameters)
    missing = init_args - set(config) - {"self", "kwargs"}
    assert not missing, f"get_config lacks {missing}"
    restored = case.cls.from_config(config)
    assert restored.get_config() == config
    serialized = keras.optimizers.serialize(optimizer)
    assert serialized["registered_name"] == (
        f"keras_batchopt>{case.cls.__name__}"
    )
    clone = keras.optimizers.deserialize(serialized)
    assert type(clone) is case.cls
    assert clone.get_config() == config


@cases
def test_default_name_is_numbered_like_keras(case):
    # Keras 3 optimizers default to `name=None` and number their instances
    # ("adam", "adam_1"), so two optimizers in one process never share
    # variable paths; an explicit name, as in an older saved config, stays.
    first, second = case.make(), case.make()
    base = keras.src.utils.naming.to_snake_case(case.cls.__name__)
    assert first.name.startswith(base)
    assert second.name.startswith(base)
    assert first.name != second.name
    config = case.make().get_config()
    config["name"] = "adan"
    assert case.cls.from_config(config).name == "adan"


@cases
def test_save_mid_training_then_resume_gives_same_next_steps(case, tmp_path):
    x, y = batches()

    def compiled_model():
        model = wire(small_model(), case)
        optimizer = case.make()
        # Exclusions are part of the saved state (Keras's own optimizers
        # forget them): the resumed steps must decay the same variables.
        optimizer.exclude_from_weight_decay(
            var_list=[model.layers[1].kernel], var_names=["bias"]
        )
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return model

    straight = compiled_model()
    for i in range(6):
        straight.train_on_batch(x[i], y[i])

    interrupted = compiled_model()
    for i in range(3):
        interrupted.train_on_batch(x[i], y[i])
    path = os.path.join(tmp_path, "mid_training.keras")
    interrupted.save(path)
    del interrupted
    keras.backend.clear_session()
    resumed = wire(keras.models.load_model(path), case)  # no custom_objects
    assert type(resumed.optimizer) is case.cls
    decays = [
        resumed.optimizer._use_weight_decay(v)
        for v in resumed.trainable_variables
    ]
    assert decays == [True, False, False, False]
    for i in range(3, 6):
        resumed.train_on_batch(x[i], y[i])
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(straight.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_allclose(
            to_numpy(a), to_numpy(b), rtol=1e-6, atol=1e-7
        )


@cases
def _jit_compile_fit_matches_eager(case):
    """On TF and JAX, `jit_compile=True` gives the same weights."""
    x, y = batches()
    x, y = x.reshape(-1, 4), y.reshape(-1)
    weights = []
    for jit in (True, False):
        model = wire(small_model(), case)
        model.compile(
            optimizer=case.make(),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit,
            run_eagerly=not jit and BACKEND == "tensorflow",
        )
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@cases
def test_loss_scale_optimizer_unscales_exactly(case):
    scale = 2.0**10
    grads_seq = gradients()
    plain = apply_all(case.make(), make_variables(), grads_seq)
    scaled_seq = [[g * scale for g in grads] for grads in grads_seq]
    wrapped = keras.optimizers.LossScaleOptimizer(
        case.make(), initial_scale=scale, dynamic_growth_steps=10_000
    )
    if BACKEND == "jax":
        # Keras's LossScaleOptimizer supports only stateless use on JAX.
        # Its step is one `cond` (finite or not) around the whole update;
        # jitted, as the trainer does, it is compiled once, not each step
        # (an eager `lax.cond` compiles its branches at every call).
        scaled = stateless_apply_all(
            wrapped, make_variables(), scaled_seq, jit=True
        )
    else:
        scaled = apply_all(wrapped, make_variables(), scaled_seq)
    assert_close(plain, scaled)


@cases
def test_mixed_float16_fit_with_loss_scaling(case):
    keras.mixed_precision.set_global_policy("mixed_float16")
    x, y = batches()
    model = wire(small_model(), case)
    before = [w.copy() for w in model.get_weights()]
    model.compile(
        optimizer=keras.optimizers.LossScaleOptimizer(case.make()),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(
        x.reshape(-1, 4), y.reshape(-1), batch_size=16, epochs=2, verbose=0
    )
    assert np.all(np.isfinite(history.history["loss"]))
    for variable in model.trainable_variables:
        assert variable.dtype == "float32"
    after = model.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(before, after))
    inner = model.optimizer.inner_optimizer
    for variable in inner.variables:
        assert np.all(np.isfinite(to_numpy(variable)))


@cases
def test_gradient_accumulation_equals_mean_gradient(case):
    grads_seq = gradients(steps=6)
    accumulated = apply_all(
        case.make(gradient_accumulation_steps=2), make_variables(), grads_seq
    )
    means = [
        [(a + b) / 2 for a, b in zip(grads_seq[i], grads_seq[i + 1])]
        for i in range(0, len(grads_seq), 2)
    ]
    direct = apply_all(case.make(), make_variables(), means)
    assert_close(accumulated[1::2], direct, rtol=1e-5)
    # Between accumulation boundaries the variables do not move.
    initial = [to_numpy(v) for v in make_variables()]
    assert_close([accumulated[0]], [initial])


@cases
def test_ema_tracks_the_trajectory(case):
    momentum = 0.8
    grads_seq = gradients()
    twin = apply_all(case.make(), make_variables(), grads_seq)
    optimizer = case.make(use_ema=True, ema_momentum=momentum)
    variables = make_variables()
    assert_close(apply_all(optimizer, variables, grads_seq), twin)
    expected = twin[0]
    for step in twin[1:]:
        expected = [
            momentum * e + (1 - momentum) * s for e, s in zip(expected, step)
        ]
    optimizer.finalize_variable_values(variables)
    assert_close([[to_numpy(v) for v in variables]], [expected], rtol=1e-5)


def _clip_by_norm(g, c):
    norm = np.linalg.norm(g)
    return g * (c / norm) if norm > c else g


def _clip_by_global_norm(grads, c):
    norm = np.sqrt(sum(float(np.sum(g * g)) for g in grads))
    return [g * (c / max(norm, c)) for g in grads]


CLIPPERS = {
    "clipnorm": lambda grads: [_clip_by_norm(g, 0.5) for g in grads],
    "global_clipnorm": lambda grads: _clip_by_global_norm(grads, 0.5),
    "clipvalue": lambda grads: [np.clip(g, -0.3, 0.3) for g in grads],
}


@cases
@pytest.mark.parametrize("clipping", sorted(CLIPPERS))
def test_keras_clipping_equals_clipped_gradients(case, clipping):
    value = 0.3 if clipping == "clipvalue" else 0.5
    grads_seq = gradients(scale=2.0)
    clipped = apply_all(
        case.make(**{clipping: value}), make_variables(), grads_seq
    )
    manual_seq = [CLIPPERS[clipping](grads) for grads in grads_seq]
    manual = apply_all(case.make(), make_variables(), manual_seq)
    assert_close(clipped, manual, rtol=1e-5)


@cases
@pytest.mark.parametrize("how", ["var_names", "var_list"])
def test_exclude_from_weight_decay(case, how):
    if not case.has_weight_decay:
        pytest.fail("every optimizer in CASES is expected to decay")
    grads_seq = gradients()
    variables = make_variables()
    optimizer = case.make(weight_decay=0.2)
    if how == "var_names":
        optimizer.exclude_from_weight_decay(var_names=["v1", "v3"])
    else:
        optimizer.exclude_from_weight_decay(
            var_list=[variables[1], variables[3]]
        )
    mixed = apply_all(optimizer, variables, grads_seq)
    decayed = apply_all(
        case.make(weight_decay=0.2), make_variables(), grads_seq
    )
    undecayed = apply_all(
        case.make(weight_decay=0.0), make_variables(), grads_seq
    )
    for step in range(len(grads_seq)):
        expected = [
            decayed[step][0],
            undecayed[step][1],
            decayed[step][2],
            undecayed[step][3],
        ]
        assert_close([mixed[step]], [expected])
    # And the decay is not a no-op.
    assert not np.allclose(decayed[-1][0], undecayed[-1][0])


@cases
def test_schedule_as_learning_rate(case):
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        [2, 5], [0.05, 0.02, 0.005]
    )
    grads_seq = gradients()
    scheduled = apply_all(
        case.make(learning_rate=schedule), make_variables(), grads_seq
    )
    by_hand = case.make(learning_rate=0.05)

    def set_lr(step):
        by_hand.learning_rate = float(schedule(step))

    manual = apply_all(by_hand, make_variables(), grads_seq, set_lr)
    assert_close(scheduled, manual)
    restored = case.cls.from_config(
        case.make(learning_rate=schedule).get_config()
    )
    # A wrapper's schedule is its inner optimizer's.
    restored = getattr(restored, "inner_optimizer", restored)
    assert isinstance(
        restored._learning_rate,
        keras.optimizers.schedules.PiecewiseConstantDecay,
    )


@cases
def _stateless_apply_equals_apply(case):
    """All state changes go through `assign*`, so JAX-style stateless
    training sees them; the stateful variables stay untouched."""
    grads_seq = gradients(steps=4)
    stateful = apply_all(case.make(), make_variables(), grads_seq)
    variables = make_variables()
    initial = [to_numpy(v) for v in variables]
    stateless = stateless_apply_all(case.make(), variables, grads_seq)
    assert_close(stateless, stateful)
    assert_close([[to_numpy(v) for v in variables]], [initial], atol=0)


@cases
def test_fit_reduces_loss_and_calls_the_hook(case, monkeypatch):
    calls = []
    hook = keras_batchopt.optimizers.BatchOptimizer._backend_update_step

    def counting_hook(self, *args, **kwargs):
        calls.append(1)
        return hook(self, *args, **kwargs)

    monkeypatch.setattr(
        keras_batchopt.optimizers.BatchOptimizer,
        "_backend_update_step",
        counting_hook,
    )
    x, y = batches(n=8)
    model = wire(small_model(), case)
    model.compile(
        optimizer=case.make(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,
    )
    history = model.fit(
        x.reshape(-1, 4), y.reshape(-1), batch_size=16, epochs=5, verbose=0
    )
    losses = history.history["loss"]
    assert losses[-1] < losses[0]
    # Keras still routes every step through our one private hook.
    assert len(calls) == 5 * 8


@cases
def test_embedding_model_fit(case):
    """An `Embedding` trains: on TensorFlow its gradient is a sparse
    `tf.IndexedSlices` (in graph mode, `jit_compile=False`, the mode of
    `fit` on a CPU), which every optimizer must take like a dense one.

    Only tokens 0-9 of 20 occur. Their rows never get a gradient, so the
    optimizer state of those rows stays exactly zero (with or without
    momentum) and only weight decay could move them: the table is excluded
    from decay, so they must not move.
    """
    rng = np.random.RandomState(4)
    x = rng.randint(0, 10, size=(64, 5)).astype("int32")
    y = x[:, 0] % 3
    keras.utils.set_random_seed(0)
    model = wire(
        keras.Sequential(
            [
                keras.Input((5,), dtype="int32"),
                keras.layers.Embedding(20, 4),
                keras.layers.GlobalAveragePooling1D(),
                keras.layers.Dense(3),
            ]
        ),
        case,
    )
    optimizer = case.make()
    optimizer.exclude_from_weight_decay(var_names=["embeddings"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)), losses
    after = model.get_weights()
    for b, a in zip(before, after):
        assert np.all(np.isfinite(a))
        assert not np.allclose(a, b)
    for variable in optimizer.variables:
        assert np.all(np.isfinite(to_numpy(variable)))
    assert not optimizer._decays(model.layers[0].embeddings)
    np.testing.assert_array_equal(after[0][10:], before[0][10:])


# Backend-dependent contract items are defined only where they apply, so
# that no test is reported as skipped: `jit_compile` exists on TF and JAX;
# `stateless_apply` on JAX (the trainer's path) and torch (TF raises).
if BACKEND in ("tensorflow", "jax"):
    test_jit_compile_fit_matches_eager = _jit_compile_fit_matches_eager
if BACKEND in ("jax", "torch"):
    test_stateless_apply_equals_apply = _stateless_apply_equals_apply


def _fit_and_forget(case):
    """Trains a small model with `case`'s optimizer; returns weak refs."""
    x, y = batches(n=2)
    model = wire(small_model(), case)
    optimizer = case.make()
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x.reshape(-1, 4), y.reshape(-1), batch_size=16, verbose=0)
    return weakref.ref(model), weakref.ref(optimizer)


@cases
def test_trained_optimizer_and_model_are_freed(case):
    # No module-level cache may keep an optimizer, its model or their
    # compiled functions alive (TensorFlow's compiled update once did).
    model_ref, optimizer_ref = _fit_and_forget(case)
    gc.collect()
    assert optimizer_ref() is None, "the optimizer outlives its last user"
    assert model_ref() is None, "the model outlives its last user"


def _loss_scaled_states(case, grads_seq):
    """Runs `grads_seq` (scaled by 2**10) through a LossScaleOptimizer
    around `case`; returns, after each step, the model variables and every
    variable of the inner optimizer, as NumPy arrays."""
    scale = 2.0**10
    wrapped = keras.optimizers.LossScaleOptimizer(
        case.make(), initial_scale=scale, dynamic_growth_steps=10_000
    )
    variables = make_variables()
    scaled_seq = [[g * scale for g in grads] for grads in grads_seq]
    wrapped.build(variables)
    inner = [id(v) for v in wrapped.inner_optimizer.variables]
    keep = [i for i, v in enumerate(wrapped.variables) if id(v) in inner]
    states = []
    if BACKEND == "jax":
        import jax

        @jax.jit
        def step(opt_values, grads, trainable):
            with hessian_scope(wrapped, variables):
                return wrapped.stateless_apply(opt_values, grads, trainable)

        trainable = [v.value for v in variables]
        opt_values = [v.value for v in wrapped.variables]
        for grads in scaled_seq:
            trainable, opt_values = step(opt_values, grads, trainable)
            states.append(
                [to_numpy(t) for t in trainable]
                + [to_numpy(opt_values[i]) for i in keep]
            )
        return states
    for grads in scaled_seq:
        with hessian_scope(wrapped, variables):
            wrapped.apply([keras.ops.convert_to_tensor(g) for g in grads])
        states.append(
            [to_numpy(v) for v in variables]
            + [to_numpy(wrapped.variables[i]) for i in keep]
        )
    return states


@cases
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_step_is_skipped_and_state_kept(case, bad):
    # A step whose gradients overflow under loss scaling is skipped by
    # Keras's LossScaleOptimizer: every state tensor (Adan's previous
    # gradient, SGD-SaI's gSNR, AdaHessian's Hessian average, the
    # accumulators) and every variable must stay bit-identical.
    poisoned = gradients(steps=4)
    poisoned[3][0].flat[0] = bad
    states = _loss_scaled_states(case, poisoned)
    for before, after in zip(states[2], states[3]):
        np.testing.assert_array_equal(before, after)
