"""Schedules against closed-form references, pytorch-optimizer's WSD, and
the Keras contract (serialization in a saved model, compiled training)."""

import functools
import math

import keras
import numpy as np
import pytest

from keras_batchopt import schedules
from keras_batchopt.src.schedules import shapes
from tests.conftest import to_numpy
from tests.references import schedules_numpy as ref

RTOL = 1e-6
ATOL = 1e-7  # times the largest value


def assert_clear_error(call, argument):
    """A ValueError naming the argument and the value received."""
    with pytest.raises(ValueError) as info:
        call()
    message = str(info.value)
    assert f"`{argument}`" in message, message
    assert f"Received: {argument}=" in message, message


def values(schedule, steps):
    return np.array([float(to_numpy(schedule(s))) for s in steps])


def around(*boundaries, last):
    """Every boundary, its neighbours, midpoints, and a tail."""
    points = {0, last, last + 7}
    for b in boundaries:
        points |= {max(b - 1, 0), b, b + 1}
    ordered = sorted(points)
    points |= {(x + y) // 2 for x, y in zip(ordered, ordered[1:])}
    return sorted(points)


def assert_matches(schedule, reference, steps):
    """Float32 evaluation: relative 1e-6, absolute 1e-7 of the peak."""
    expected = np.array([reference(s) for s in steps])
    np.testing.assert_allclose(
        values(schedule, steps),
        expected,
        rtol=RTOL,
        atol=ATOL * np.abs(expected).max(),
    )


@pytest.mark.parametrize("shape", shapes.DECAY_SHAPES)
@pytest.mark.parametrize("floor", [0.0, 1e-4])
def test_wsd_matches_closed_form(shape, floor):
    schedule = schedules.WarmupStableDecay(
        1e-3,
        20,
        30,
        stable_steps=50,
        decay_shape=shape,
        min_learning_rate=floor,
    )
    reference = functools.partial(
        ref.wsd,
        peak=1e-3,
        warmup=20,
        stable=50,
        decay=30,
        shape=shape,
        floor=floor,
    )
    assert_matches(schedule, reference, around(20, 70, 100, last=100))


def test_wsd_exponential_half_life_and_fractions():
    schedule = schedules.WarmupStableDecay(
        2e-3,
        warmup_steps=0.05,
        decay_steps=0.25,
        total_steps=400,
        decay_shape="exponential",
        half_life=7,
        min_learning_rate=1e-5,
    )
    reference = functools.partial(
        ref.wsd,
        peak=2e-3,
        warmup=20,
        stable=280,
        decay=100,
        shape="exponential",
        floor=1e-5,
        half_life=7,
    )
    assert_matches(schedule, reference, around(20, 300, 400, last=400))
    # Seven steps into the decay the raw exponential has halved.
    lr = float(to_numpy(schedule(307)))
    shift = 0.5 ** (100 / 7)
    raw = (lr - 1e-5) / (2e-3 - 1e-5) * (1 - shift) + shift
    assert raw == pytest.approx(0.5, rel=1e-5)


# pytorch_optimizer's own test, tests/test_lr_schedulers.py::
# test_wsd_lr_scheduler (https://github.com/kozistr/pytorch_optimizer):
# lr 1e-3, warmup 2, stable 2, decay 3, min_lr_ratio 0.1, read after each
# of 9 scheduler steps, i.e. at steps 1..9.
PYOPT_COSINE = [5e-4, 1e-3, 1e-3, 1e-3, 7.75e-4, 3.25e-4, 1e-4, 1e-4, 1e-4]


def _pyopt_ratio(step, shape, floor=0.1, warmup=2, stable=2, decay=3):
    from pytorch_optimizer.lr_scheduler.wsd import get_wsd_scheduler_lambda

    return get_wsd_scheduler_lambda(
        step,
        num_warmup_steps=warmup,
        num_stable_steps=stable,
        num_decay_steps=decay,
        min_lr_ratio=floor,
        num_cycles=0.5,
        cooldown_type=shape,
    )


def test_wsd_cosine_equals_pytorch_optimizer():
    schedule = schedules.WarmupStableDecay(
        1e-3,
        2,
        3,
        stable_steps=2,
        decay_shape="cosine",
        min_learning_rate=1e-4,
    )
    ours = values(schedule, range(1, 10))
    np.testing.assert_allclose(ours, PYOPT_COSINE, rtol=1e-6)
    long = schedules.WarmupStableDecay(
        1e-3,
        13,
        57,
        stable_steps=30,
        decay_shape="cosine",
        min_learning_rate=2e-5,
    )
    steps = range(0, 130)
    theirs = [1e-3 * _pyopt_ratio(s, "cosine", 0.02, 13, 30, 57) for s in steps]
    np.testing.assert_allclose(values(long, steps), theirs, rtol=1e-6)


@pytest.mark.parametrize("shape", ["1-sqrt", "linear", "1-square"])
def test_wsd_documented_difference_from_pytorch_optimizer(shape):
    """pytorch-optimizer decays these shapes to 0 and then jumps up to the
    floor; ours is rescaled to end on the floor: ours = floor + (1 - floor)
    * theirs inside the decay, equal elsewhere."""
    floor = 0.1
    schedule = schedules.WarmupStableDecay(
        1.0, 2, 3, stable_steps=2, decay_shape=shape, min_learning_rate=floor
    )
    for step in range(0, 12):
        theirs = _pyopt_ratio(step, shape, floor)
        ours = float(to_numpy(schedule(step)))
        if 4 <= step < 7:
            assert ours == pytest.approx(floor + (1 - floor) * theirs)
        else:
            assert ours == pytest.approx(theirs)
    # Their jump, on a 100-step decay: below the floor on the last decay
    # step, then up to the floor. Ours ends on the floor from above.
    last = _pyopt_ratio(101, shape, floor, 2, 0, 100)
    assert last < floor / 2
    assert _pyopt_ratio(102, shape, floor, 2, 0, 100) == floor
    long = schedules.WarmupStableDecay(
        1.0, 2, 100, stable_steps=0, decay_shape=shape, min_learning_rate=floor
    )
    ours = values(long, [100, 101, 102, 110])
    assert ours[0] > ours[1] > floor
    np.testing.assert_allclose(ours[2:], floor, rtol=1e-6)


@pytest.mark.parametrize("shape", ["1-sqrt", "linear", "1-square"])
def test_pyopt_golden_values_reproduced(shape):
    """pytorch-optimizer's `test_wsd_lr_scheduler` values (min_lr_ratio
    0.1), read after steps 5 and 6, come from the 0-ending shapes."""
    golden = {
        "1-sqrt": [4.226e-4, 1.835e-4],
        "1-square": [8.888e-4, 5.555e-4],
        "linear": [6.666e-4, 3.333e-4],
    }[shape]
    theirs = [1e-3 * _pyopt_ratio(s, shape) for s in (5, 6)]
    np.testing.assert_allclose(theirs, golden, rtol=1e-3)


@pytest.mark.parametrize("decay", [0, 40])
@pytest.mark.parametrize("a,batch", [(0.5, 2), (4.0, 8)])
def test_power_matches_closed_form(decay, a, batch):
    """(0.5, 2) stays under the cap from step 1 on; (4.0, 8) is capped
    until late."""
    kwargs = dict(
        max_lr=0.02,
        a=a,
        b=-0.51,
        batch=batch,
        tokens_per_step=512,
        warmup=10,
        decay=decay,
        total=2000,
        shape="linear",
        floor=1e-4,
    )
    schedule = schedules.PowerSchedule(
        max_learning_rate=0.02,
        a=a,
        b=-0.51,
        batch_size=batch,
        tokens_per_step=512,
        warmup_steps=10,
        decay_steps=decay,
        total_steps=2000,
        decay_shape="linear",
        min_learning_rate=1e-4,
    )
    reference = functools.partial(ref.power, **kwargs)
    steps = around(10, 1960, 2000, last=2000)
    assert_matches(schedule, reference, steps)
    if a == 0.5:
        lr = values(schedule, steps)
        assert np.all(lr[(np.array(steps) > 0)] < 0.02)


def test_power_equals_ibm_power_scheduler_form():
    """dolomite-engine's PowerScheduler: lr = lr_max * min(1, (a/lr_max)
    (step c)^b) after warmup, a linear ramp to its warmup-end value before
    (re-derived from its source, no batch size, no decay)."""
    a, b, c, lr_max, warmup = 4.0, -0.51, 2048, 0.02, 50
    schedule = schedules.PowerSchedule(
        max_learning_rate=lr_max,
        a=a,
        b=b,
        tokens_per_step=c,
        warmup_steps=warmup,
    )

    def dolomite(step):
        peak = min(1, (a / lr_max) * (warmup * c) ** b)
        if step <= warmup:
            return lr_max * peak / warmup * step
        return lr_max * min(1, (a / lr_max) * (step * c) ** b)

    steps = [0, 1, 25, 49, 50, 51, 1000, 10**5]
    np.testing.assert_allclose(
        values(schedule, steps), [dolomite(s) for s in steps], rtol=RTOL
    )


def test_power_is_capped_without_warmup():
    schedule = schedules.PowerSchedule(max_learning_rate=0.01, a=1.0)
    assert float(to_numpy(schedule(0))) == pytest.approx(0.01)
    assert float(to_numpy(schedule(1))) == pytest.approx(0.01)
    assert float(to_numpy(schedule(10**6))) < 0.01


@pytest.mark.parametrize("shape", ["cosine", "inv_sqrt"])
@pytest.mark.parametrize("anneal", [None, 500])
def test_infinite_matches_closed_form(shape, anneal):
    schedule = schedules.InfiniteSchedule(
        1e-3,
        2e-4,
        warmup_steps=30,
        cooldown_steps=170,
        cooldown_shape=shape,
        inv_sqrt_alpha=5.0,
        annealing_start=anneal,
        annealing_steps=60,
        annealing_shape="cosine",
        min_learning_rate=1e-5,
    )
    reference = functools.partial(
        ref.infinite,
        max_lr=1e-3,
        const=2e-4,
        warmup=30,
        cooldown=170,
        shape=shape,
        alpha=5.0,
        anneal_at=anneal,
        anneal_steps=60,
        anneal_shape="cosine",
        floor=1e-5,
    )
    assert_matches(schedule, reference, around(30, 200, 500, 560, last=600))


def test_infinite_with_annealing_branches_and_keeps_the_rest():
    base = schedules.InfiniteSchedule(
        1e-3, 2e-4, warmup_steps=10, cooldown_steps=90, annealing_steps=40
    )
    branch = base.with_annealing(700)
    assert base.annealing_start is None and branch.annealing_start == 700
    steps = [0, 50, 100, 699]
    np.testing.assert_allclose(values(branch, steps), values(base, steps))
    reference = functools.partial(
        ref.infinite,
        max_lr=1e-3,
        const=2e-4,
        warmup=10,
        cooldown=90,
        anneal_at=700,
        anneal_steps=40,
    )
    assert_matches(branch, reference, around(700, 740, last=760))


@pytest.mark.parametrize("offset", [True, False])
def test_gradual_warmup_matches_closed_form(offset):
    main = schedules.WarmupStableDecay(
        0.8, 0, 100, stable_steps=200, decay_shape="cosine"
    )
    schedule = schedules.GradualWarmup(
        main, warmup_steps=50, start_learning_rate=0.1, offset=offset
    )

    def main_ref(s):
        return ref.wsd(s, 0.8, 0, 200, 100, "cosine", 0.0)

    reference = functools.partial(
        ref.gradual_warmup,
        main=main_ref,
        warmup=50,
        start=0.1,
        offset=offset,
    )
    assert_matches(schedule, reference, around(50, 250, 350, last=400))


def test_gradual_warmup_of_a_constant():
    schedule = schedules.GradualWarmup(0.4, warmup_steps=4)
    np.testing.assert_allclose(
        values(schedule, range(6)), [0, 0.1, 0.2, 0.3, 0.4, 0.4], rtol=RTOL
    )


def _all_schedules():
    return {
        "wsd": schedules.WarmupStableDecay(
            1e-3,
            10,
            20,
            stable_steps=30,
            decay_shape="exponential",
            min_learning_rate=1e-5,
        ),
        "wsd_sqrt": schedules.WarmupStableDecay(
            1e-3, 10, 20, stable_steps=30, min_learning_rate=1e-5
        ),
        "power": schedules.PowerSchedule(
            max_learning_rate=0.01,
            a=0.05,
            tokens_per_step=64,
            warmup_steps=10,
            decay_steps=20,
            total_steps=60,
        ),
        "infinite": schedules.InfiniteSchedule(
            1e-3,
            3e-4,
            10,
            20,
            cooldown_shape="inv_sqrt",
            annealing_start=40,
            annealing_steps=15,
            min_learning_rate=1e-5,
        ),
        "gradual": schedules.GradualWarmup(
            schedules.WarmupStableDecay(
                1e-3, 0, 20, stable_steps=20, min_learning_rate=1e-5
            ),
            warmup_steps=10,
            start_learning_rate=1e-4,
        ),
    }


# The phase boundaries of each schedule above.
BOUNDARIES = {
    "wsd": [10, 40, 60],
    "wsd_sqrt": [10, 40, 60],
    "power": [10, 40, 60],
    "infinite": [10, 30, 40, 55],
    "gradual": [10, 30, 50],
}


@pytest.mark.parametrize("name", sorted(_all_schedules()))
def test_continuous_at_every_phase_boundary(name):
    """On both sides of every boundary the gap |lr(b +- d) - lr(b)|
    shrinks with d and is below 1% of the peak at d = 1e-4: a jump (such
    as pytorch-optimizer's return to the floor) keeps a constant gap."""
    schedule = _all_schedules()[name]
    peak = values(schedule, np.arange(0, 70)).max()
    for b in BOUNDARIES[name]:
        for side in (-1, 1):
            gaps = [
                abs(
                    values(schedule, [b + side * d])[0]
                    - values(schedule, [b])[0]
                )
                for d in (1e-2, 1e-3, 1e-4)
            ]
            assert gaps[2] < 0.01 * peak, (b, side, gaps)
            assert gaps[0] >= gaps[1] >= gaps[2], (b, side, gaps)


@pytest.mark.parametrize("name", sorted(_all_schedules()))
def test_config_round_trip(name):
    schedule = _all_schedules()[name]
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(schedule)
    )
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    steps = list(range(0, 70, 3))
    np.testing.assert_array_equal(
        values(restored, steps), values(schedule, steps)
    )


@pytest.mark.parametrize("name", sorted(_all_schedules()))
def test_saved_inside_a_model_and_resumed(name, tmp_path):
    """The schedule drives a compiled fit, survives model.save/load_model
    without custom_objects, and the reloaded optimizer continues on it."""
    schedule = _all_schedules()[name]
    x = np.random.RandomState(0).randn(64, 3).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule),
        loss="mse",
        jit_compile=keras.backend.backend() != "torch",
    )
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    assert int(model.optimizer.iterations) == 16
    assert float(to_numpy(model.optimizer.learning_rate)) == pytest.approx(
        float(to_numpy(schedule(16))), rel=1e-6
    )
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    restored = loaded.optimizer._learning_rate
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_schedule_is_read_at_the_optimizer_iteration():
    """In a compiled step, each update uses lr(iterations) before the
    increment: plain SGD on loss = w recovers every learning rate."""
    schedule = _all_schedules()["infinite"]
    variable = keras.Variable(np.zeros((1,), "float32"))
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    optimizer.build([variable])
    grad = keras.ops.ones((1,))
    previous, taken = 0.0, []
    for _ in range(60):
        optimizer.apply([grad], [variable])
        current = float(to_numpy(variable)[0])
        taken.append(previous - current)
        previous = current
    np.testing.assert_allclose(
        taken, values(schedule, range(60)), rtol=1e-4, atol=1e-9
    )


BAD = [
    (
        schedules.WarmupStableDecay,
        dict(learning_rate=0.0, warmup_steps=1, decay_steps=1, stable_steps=1),
        "learning_rate",
    ),
    (
        schedules.WarmupStableDecay,
        dict(learning_rate=1.0, warmup_steps=-1, decay_steps=1, stable_steps=1),
        "warmup_steps",
    ),
    (
        schedules.WarmupStableDecay,
        dict(
            learning_rate=1.0, warmup_steps=1.5, decay_steps=1, stable_steps=1
        ),
        "warmup_steps",
    ),
    (
        schedules.WarmupStableDecay,
        dict(
            learning_rate=1.0, warmup_steps=0.1, decay_steps=1, stable_steps=1
        ),
        "total_steps",
    ),
    (
        schedules.WarmupStableDecay,
        dict(learning_rate=1.0, warmup_steps=1, decay_steps=1),
        "stable_steps",
    ),
    (
        schedules.WarmupStableDecay,
        dict(learning_rate=1.0, warmup_steps=6, decay_steps=6, total_steps=10),
        "total_steps",
    ),
    (
        schedules.WarmupStableDecay,
        dict(
            learning_rate=1.0,
            warmup_steps=1,
            decay_steps=1,
            stable_steps=1,
            decay_shape="step",
        ),
        "decay_shape",
    ),
    (
        schedules.WarmupStableDecay,
        dict(
            learning_rate=1.0,
            warmup_steps=1,
            decay_steps=1,
            stable_steps=1,
            min_learning_rate=2.0,
        ),
        "min_learning_rate",
    ),
    (
        schedules.WarmupStableDecay,
        dict(
            learning_rate=1.0,
            warmup_steps=1,
            decay_steps=1,
            stable_steps=1,
            half_life=0,
        ),
        "half_life",
    ),
    (schedules.PowerSchedule, dict(b=0.5), "b"),
    (schedules.PowerSchedule, dict(a=-1.0), "a"),
    (schedules.PowerSchedule, dict(batch_size=0), "batch_size"),
    (schedules.PowerSchedule, dict(tokens_per_step=2.5), "tokens_per_step"),
    (schedules.PowerSchedule, dict(decay_steps=10), "total_steps"),
    (
        schedules.InfiniteSchedule,
        dict(
            max_learning_rate=1.0,
            constant_learning_rate=2.0,
            warmup_steps=1,
            cooldown_steps=1,
        ),
        "constant_learning_rate",
    ),
    (
        schedules.InfiniteSchedule,
        dict(
            max_learning_rate=1.0,
            constant_learning_rate=0.5,
            warmup_steps=10,
            cooldown_steps=10,
            annealing_start=5,
        ),
        "annealing_start",
    ),
    (
        schedules.InfiniteSchedule,
        dict(
            max_learning_rate=1.0,
            constant_learning_rate=0.5,
            warmup_steps=1,
            cooldown_steps=1,
            cooldown_shape="linear",
        ),
        "cooldown_shape",
    ),
    (schedules.GradualWarmup, dict(schedule=-1.0, warmup_steps=3), "schedule"),
    (
        schedules.GradualWarmup,
        dict(schedule=1.0, warmup_steps=3, offset=1),
        "offset",
    ),
]


@pytest.mark.parametrize("cls,kwargs,argument", BAD)
def test_bad_arguments_raise_clear_errors(cls, kwargs, argument):
    assert_clear_error(lambda: cls(**kwargs), argument)


# ---------------------------------------------------------------- batch rules


@pytest.mark.parametrize(
    "optimizer,rule",
    [
        (keras.optimizers.SGD, "linear"),
        (keras.optimizers.Adam, "sqrt"),
        (keras.optimizers.AdamW, "sqrt"),
        (keras.optimizers.Lamb, "sqrt"),
        (keras.optimizers.RMSprop, "sqrt"),
        ("Adagrad", "sqrt"),
        ("SGD", "linear"),
    ],
)
def test_scale_learning_rate_auto_rule_for_keras(optimizer, rule):
    opt = optimizer() if isinstance(optimizer, type) else optimizer
    got = schedules.scale_learning_rate(
        0.1, batch_size=1024, base_batch_size=256, optimizer=opt
    )
    assert got == pytest.approx(0.4 if rule == "linear" else 0.2)


def test_scale_learning_rate_for_our_optimizers():
    from keras_batchopt import optimizers

    expect = {"Adan": 0.2, "Lamb": 0.2, "Lars": 0.4}
    for name, value in expect.items():
        opt = getattr(optimizers, name)()
        got = schedules.scale_learning_rate(0.1, 1024, optimizer=opt)
        assert got == pytest.approx(value), name
    for name in expect:
        cls = getattr(optimizers, name)
        assert cls.batch_scaling_rule in ("linear", "sqrt")


def test_scale_learning_rate_counts_accumulation_and_replicas():
    sgd = keras.optimizers.SGD(gradient_accumulation_steps=4)
    wrapped = keras.optimizers.LossScaleOptimizer(sgd)
    got = schedules.scale_learning_rate(0.1, 64, 256, optimizer=wrapped)
    assert got == pytest.approx(0.1)  # 64 x 4 = 256
    got = schedules.scale_learning_rate(
        0.1,
        64,
        256,
        rule="sqrt",
        gradient_accumulation_steps=4,
        num_replicas=4,
    )
    assert got == pytest.approx(0.2)  # 64 x 4 x 4 = 4 x 256


def test_scale_learning_rate_explicit_rules():
    assert schedules.scale_learning_rate(
        0.1, 128, 256, rule="linear"
    ) == pytest.approx(0.05)
    assert schedules.scale_learning_rate(
        0.1, 64, 256, rule="sqrt"
    ) == pytest.approx(0.05)


def test_scale_training_length():
    assert schedules.scale_training_length(10, 4096, 256) == 160
    assert schedules.scale_training_length(3, 100, 256) == 2
    assert schedules.scale_training_length(
        2.0, 512, 256, gradient_accumulation_steps=2
    ) == pytest.approx(8.0)


@pytest.mark.parametrize(
    "call,argument",
    [
        (lambda: schedules.scale_learning_rate(0.1, 0), "batch_size"),
        (lambda: schedules.scale_learning_rate(-0.1, 8), "base_learning_rate"),
        (lambda: schedules.scale_learning_rate(0.1, 8, rule="cubic"), "rule"),
        (lambda: schedules.scale_learning_rate(0.1, 8), "optimizer"),
        (
            lambda: schedules.scale_learning_rate(
                0.1, 8, optimizer=type("Mystery", (keras.Optimizer,), {})
            ),
            "optimizer",
        ),
        (
            lambda: schedules.scale_learning_rate(
                0.1, 8, rule="linear", num_replicas=0
            ),
            "num_replicas",
        ),
        (lambda: schedules.scale_training_length(0, 8), "length"),
        (lambda: schedules.scale_training_length(1, 8, 0), "base_batch_size"),
    ],
)
def test_batch_rules_bad_arguments(call, argument):
    assert_clear_error(call, argument)


def test_float_steps_and_large_steps_are_finite():
    for schedule in _all_schedules().values():
        lr = values(schedule, [0, 1, 10**7])
        assert np.all(np.isfinite(lr)) and np.all(lr >= 0)
    assert math.isfinite(float(to_numpy(_all_schedules()["power"](2.5))))


def _far(a, b):
    """Apart by more than 100x the tolerance somewhere."""
    a, b = np.asarray(a), np.asarray(b)
    scale = np.abs(b).max()
    return np.any(np.abs(a - b) > 100 * (RTOL * np.abs(b) + ATOL * scale))


@pytest.mark.parametrize("variant", sorted(ref.WSD_VARIANTS))
def test_wsd_oracle_detects_each_perturbation(variant):
    kwargs = dict(peak=1e-3, warmup=20, stable=50, decay=30, floor=1e-4)
    steps = around(20, 70, 100, last=100)
    shapes_to_try = ["1-sqrt", "exponential"]
    detected = False
    for shape in shapes_to_try:
        good = [ref.wsd(s, shape=shape, **kwargs) for s in steps]
        bad = [
            ref.WSD_VARIANTS[variant](s, shape=shape, **kwargs) for s in steps
        ]
        detected |= _far(bad, good)
    assert detected


@pytest.mark.parametrize("variant", sorted(ref.POWER_VARIANTS))
def test_power_oracle_detects_each_perturbation(variant):
    kwargs = dict(
        max_lr=0.02,
        a=0.5,
        b=-0.51,
        batch=2,
        tokens_per_step=512,
        warmup=10,
        decay=40,
        total=200,
        shape="linear",
        floor=1e-4,
    )
    steps = around(10, 160, 200, last=200)
    good = [ref.power(s, **kwargs) for s in steps]
    bad = [ref.POWER_VARIANTS[variant](s, **kwargs) for s in steps]
    assert _far(bad, good)


def test_infinite_oracle_detects_an_unscaled_cooldown():
    kwargs = dict(shape="inv_sqrt", alpha=5.0)
    steps = around(30, 200, last=300)
    good = [ref.infinite(s, 1e-3, 2e-4, 30, 170, **kwargs) for s in steps]
    bad = [
        ref.INFINITE_VARIANTS["unscaled_inv_sqrt"](
            s, 1e-3, 2e-4, 30, 170, **kwargs
        )
        for s in steps
    ]
    assert _far(bad, good)
