"""SinkGD against its NumPy reference and the paper's properties, on every
backend.

No peer library implements SinkGD (none of optax 0.2.8, pytorch_optimizer
4.1.0, timm 1.0.31 or Keras 3.15), so the oracle is the float64 reference
written from the paper (tests/references/sink_gd_numpy.py) and property
tests of the paper's SR-Sinkhorn (arXiv 2502.06742): the fixed point of the
normalization, invariance to the gradient's scale, no state for the
matrices, and the documented AdamW routing.
"""

import keras
import numpy as np
import pytest

from keras_batchopt.optimizers import SinkGD
from tests.conftest import to_numpy
from tests.optimizers import oracle_harness as harness
from tests.optimizers.oracle_harness import assert_trajectories_close
from tests.optimizers.oracle_harness import max_rel_error
from tests.optimizers.oracle_harness import run_numpy
from tests.references.sink_gd_numpy import VARIANTS
from tests.references.sink_gd_numpy import SinkGDNumpy

# w0 and w3 are rank 1 (AdamW); w1 is a non-square matrix and w2 a conv
# kernel (kh, kw, in, out) with fan-in 18 and 4 outputs (SinkGD).
SHAPES = [(7,), (5, 3), (3, 3, 2, 4), (4,)]
STEPS = 40
LR = 0.01


def gradient_sequence(steps=STEPS, seed=0):
    return harness.gradient_sequence(SHAPES, steps, seed)


def initial_params():
    return harness.initial_params(SHAPES)


def masks(names):
    return harness.name_masks(names, len(SHAPES))


constant = harness.constant


RANK_ONE_ADAM = [True, False, False, True]

# name -> (our kwargs, names excluded from decay, reference kwargs)
CONFIGS = {
    "defaults": (dict(learning_rate=LR), [], {}),
    "one_iteration": (
        dict(learning_rate=LR, num_iterations=1),
        [],
        dict(num_iterations=1),
    ),
    "many_iterations": (
        dict(learning_rate=LR, num_iterations=12),
        [],
        dict(num_iterations=12),
    ),
    "decay": (
        dict(learning_rate=LR, weight_decay=0.5),
        [],
        dict(weight_decay=0.5),
    ),
    "decay_one_iteration": (
        dict(learning_rate=LR, weight_decay=0.5, num_iterations=1),
        [],
        dict(weight_decay=0.5, num_iterations=1),
    ),
    # One variable of each route excluded from decay.
    "decay_exclusions": (
        dict(learning_rate=LR, weight_decay=0.5),
        ["w0", "w1"],
        dict(weight_decay=0.5, decay_mask=masks(["w0", "w1"])),
    ),
    # The conv kernel routed to AdamW by a regex on its path.
    "exclude_layers": (
        dict(learning_rate=LR, weight_decay=0.5, exclude_layers=["w2"]),
        [],
        dict(weight_decay=0.5, adam_mask=[True, False, True, True]),
    ),
    "adam_lr_ratio": (
        dict(learning_rate=LR, weight_decay=0.5, adam_lr_ratio=0.3),
        [],
        dict(weight_decay=0.5, adam_lr_ratio=0.3),
    ),
    "unit_frobenius": (
        dict(learning_rate=0.1, output_scale="unit_frobenius"),
        [],
        dict(output_scale="unit_frobenius"),
    ),
    "adam_options": (
        dict(learning_rate=LR, adam_beta_1=0.8, adam_beta_2=0.99, epsilon=0.1),
        [],
        dict(adam_beta_1=0.8, adam_beta_2=0.99, epsilon=0.1),
    ),
    # A floor above sqrt(3): the columns of w1 (3 outputs) are floored, so
    # this pins max(norm, eps) against norm + eps.
    "large_sinkhorn_epsilon": (
        dict(learning_rate=LR, sinkhorn_epsilon=3.0),
        [],
        dict(sinkhorn_epsilon=3.0),
    ),
}


def make(config, learning_rate=None):
    kwargs, excluded, reference_kwargs = config
    if learning_rate is not None:
        kwargs = dict(kwargs, learning_rate=learning_rate)
    optimizer = SinkGD(**kwargs)
    if excluded:
        optimizer.exclude_from_weight_decay(var_names=excluded)
    return optimizer, SinkGDNumpy(initial_params(), **reference_kwargs)


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


@pytest.mark.parametrize("config", ["decay", "exclude_layers"])
def test_matches_numpy_reference_with_schedule(config):
    schedule = keras.optimizers.schedules.ExponentialDecay(
        LR, decay_steps=10, decay_rate=0.5
    )
    grads_seq = gradient_sequence()
    optimizer, reference = make(CONFIGS[config], learning_rate=schedule)
    oracle = run_numpy(reference, grads_seq, lambda s: LR * 0.5 ** (s / 10))
    assert_trajectories_close(run_ours(optimizer, grads_seq), oracle)


# Variants whose mistake shows only under other options.
VARIANT_KWARGS = {"epsilon_added": dict(sinkhorn_epsilon=3.0)}


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v != "correct"])
def test_oracle_detects_each_perturbation(variant):
    """Each plausible porting mistake moves the result far outside RTOL."""
    kwargs = dict(
        weight_decay=0.5, adam_lr_ratio=0.5, **VARIANT_KWARGS.get(variant, {})
    )
    lr_fn = lambda step: LR * 0.95**step  # noqa: E731
    grads_seq = gradient_sequence()
    ours, _ = harness.run_keras(
        SinkGD(LR, **kwargs), grads_seq, initial_params(), lr_fn=lr_fn
    )

    def reference(variant):
        return run_numpy(
            SinkGDNumpy(initial_params(), variant=variant, **kwargs),
            grads_seq,
            lr_fn,
        )

    assert max_rel_error(ours, reference("correct")) <= 1.0
    assert max_rel_error(ours, reference(variant)) > 100.0


def applied_update(optimizer, gradient):
    """The SinkGD step, recovered from a zero weight with lr=1, wd=0."""
    variable = keras.Variable(np.zeros(gradient.shape, "float32"), name="w")
    optimizer.apply([keras.ops.convert_to_tensor(gradient)], [variable])
    return -to_numpy(variable).astype("float64")


FIXED_POINT_SHAPES = [(5, 3), (3, 8), (3, 3, 2, 4), (16, 7)]


@pytest.mark.parametrize("shape", FIXED_POINT_SHAPES, ids=str)
def test_many_iterations_reach_the_sinkhorn_fixed_point(shape):
    """Every output unit's fan-in slice has norm sqrt(fan_in), every fan-in
    entry's output slice sqrt(out), the whole step sqrt(fan_in * out)."""
    gradient = np.random.RandomState(3).randn(*shape).astype("float32")
    fan_in, fan_out = int(np.prod(shape[:-1])), shape[-1]

    def norms(update):
        matrix = update.reshape(fan_in, fan_out)
        return (
            np.linalg.norm(matrix, axis=0),  # per output unit (paper rows)
            np.linalg.norm(matrix, axis=1),  # per fan-in entry (columns)
            np.linalg.norm(matrix),
        )

    rows, columns, frobenius = norms(
        applied_update(SinkGD(1.0, num_iterations=200), gradient)
    )
    np.testing.assert_allclose(rows, np.sqrt(fan_in), rtol=1e-5)
    np.testing.assert_allclose(columns, np.sqrt(fan_out), rtol=1e-5)
    np.testing.assert_allclose(frobenius, np.sqrt(fan_in * fan_out), rtol=1e-5)
    # One round is not at the fixed point: the test can tell them apart.
    rows, columns, _ = norms(
        applied_update(SinkGD(1.0, num_iterations=1), gradient)
    )
    np.testing.assert_allclose(columns, np.sqrt(fan_out), rtol=1e-5)
    assert np.max(np.abs(rows / np.sqrt(fan_in) - 1.0)) > 1e-3


def test_unit_frobenius_scale_has_norm_one():
    gradient = np.random.RandomState(4).randn(3, 3, 2, 4).astype("float32")
    update = applied_update(
        SinkGD(1.0, output_scale="unit_frobenius"), gradient
    )
    np.testing.assert_allclose(np.linalg.norm(update), 1.0, rtol=1e-5)


@pytest.mark.parametrize("num_iterations", [1, 5])
@pytest.mark.parametrize("shape", [(5, 3), (3, 3, 2, 4)], ids=str)
def test_update_is_invariant_to_positive_gradient_scale(shape, num_iterations):
    gradient = np.random.RandomState(5).randn(*shape).astype("float32")

    def update(scale):
        return applied_update(
            SinkGD(1.0, num_iterations=num_iterations),
            (gradient * np.float32(scale)).astype("float32"),
        )

    base = update(1.0)
    # Powers of two scale every norm exactly: the steps are bit-identical.
    for scale in (2.0**-20, 2.0**-3, 2.0**9, 2.0**30):
        np.testing.assert_array_equal(update(scale), base)
    # Other factors only round differently: float32, about 6e-8 per
    # operation; measured at most 4e-7 relative over five rounds.
    for scale in (1e-6, 0.3, 7.7, 4.1e5):
        np.testing.assert_allclose(update(scale), base, rtol=2e-6, atol=1e-7)
    # Sanity: the step is not the gradient itself (nor proportional to it).
    assert not np.allclose(
        base / np.linalg.norm(base),
        gradient / np.linalg.norm(gradient),
        rtol=1e-2,
    )


def test_zero_rows_give_a_zero_step_not_nan():
    gradient = np.random.RandomState(6).randn(4, 3).astype("float32")
    gradient[:, 1] = 0.0  # an output unit without gradient
    gradient[2, :] = 0.0  # an input without gradient
    update = applied_update(SinkGD(1.0), gradient)
    assert np.all(np.isfinite(update))
    assert np.all(update[:, 1] == 0.0) and np.all(update[2, :] == 0.0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_norms_are_float32_for_low_precision_variables(dtype):
    """A gradient of 300 everywhere overflows a float16 sum of squares
    (64 * 9e4 > 65504); normalized in float32 it is a step of ones."""
    variable = keras.Variable(np.zeros((8, 8)), dtype=dtype)
    gradient = keras.ops.full((8, 8), 300.0, dtype=dtype)
    SinkGD(0.5).apply([gradient], [variable])
    result = to_numpy(variable).astype("float64")
    np.testing.assert_array_equal(result, -0.5)


def model_with_every_route():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 5, name="tokens")(inputs)
    x = keras.layers.Conv1D(4, 3, name="conv")(x)
    x = keras.layers.LayerNormalization(name="norm")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, activation="tanh", name="hidden")(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    return keras.Model(inputs, outputs)


def routes(optimizer, model):
    """{layer/variable: "adamw" or "sinkgd"} as built."""
    optimizer.build(model.trainable_variables)
    return {
        "/".join(v.path.split("/")[-2:]): ("adamw" if a else "sinkgd")
        for v, a in zip(model.trainable_variables, optimizer._uses_adamw)
    }


def test_routing_on_a_model_follows_muons_rule():
    model = model_with_every_route()
    assert routes(SinkGD(exclude_layers=["head"]), model) == {
        "tokens/embeddings": "adamw",  # exclude_embeddings
        "conv/kernel": "sinkgd",  # rank 3
        "conv/bias": "adamw",  # rank 1
        "norm/gamma": "adamw",
        "norm/beta": "adamw",
        "hidden/kernel": "sinkgd",
        "hidden/bias": "adamw",
        "head/kernel": "adamw",  # exclude_layers
        "head/bias": "adamw",
    }
    # Without the exclusions, every matrix takes SinkGD.
    plain = routes(SinkGD(exclude_embeddings=False), model_with_every_route())
    assert [k for k, r in plain.items() if r == "sinkgd"] == [
        "tokens/embeddings",
        "conv/kernel",
        "hidden/kernel",
        "head/kernel",
    ]


def test_only_adamw_routed_variables_have_state():
    """The memory claim: SinkGD-routed matrices hold no optimizer variable."""
    model = model_with_every_route()
    optimizer = SinkGD(exclude_layers=["head"])
    routed = routes(optimizer, model)
    adam = keras.optimizers.Adam()
    adam.build(model.trainable_variables)
    n_sinkgd = sum(r == "sinkgd" for r in routed.values())
    assert n_sinkgd == 2
    # Adam: iteration, learning rate, m and v for every variable.
    assert len(adam.variables) == 2 + 2 * len(model.trainable_variables)
    assert len(optimizer.variables) == len(adam.variables) - 2 * n_sinkgd
    sinkgd_shapes = sorted(
        tuple(v.shape)
        for v, a in zip(model.trainable_variables, optimizer._uses_adamw)
        if not a
    )
    adam_slots = sorted(
        tuple(v.shape) for v in optimizer.variables if len(v.shape) > 0
    )
    assert not set(sinkgd_shapes) & set(adam_slots)
    # Training on the model goes through both routes.
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.RandomState(0)
    x = rng.randint(0, 20, size=(32, 6))
    y = rng.randint(0, 3, size=(32,))
    before = [w.copy() for w in model.get_weights()]
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert all(
        not np.allclose(a, b) for a, b in zip(before, model.get_weights())
    )
    assert len(optimizer.variables) == len(adam.variables) - 2 * n_sinkgd


@pytest.mark.parametrize("exclude_embeddings", [True, False])
def test_fit_trains_an_embedding_on_either_route(exclude_embeddings):
    """On TensorFlow the embedding's gradient is a `tf.IndexedSlices`."""
    model = model_with_every_route()
    model.compile(
        optimizer=SinkGD(exclude_embeddings=exclude_embeddings),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.RandomState(1)
    x = rng.randint(0, 10, size=(32, 6))  # tokens 10..19 never occur
    y = rng.randint(0, 3, size=(32,))
    table = to_numpy(model.layers[1].embeddings)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    new_table = to_numpy(model.layers[1].embeddings)
    assert not np.allclose(new_table[:10], table[:10])
    if exclude_embeddings:
        # AdamW: rows without gradient stay put (no weight decay here).
        np.testing.assert_array_equal(new_table[10:], table[10:])


def test_no_state_for_a_model_of_matrices_only():
    variables = [
        keras.Variable(np.ones((3, 2), "float32"), name="a"),
        keras.Variable(np.ones((2, 2, 3, 4), "float32"), name="b"),
    ]
    optimizer = SinkGD(0.1)
    optimizer.build(variables)
    names = {v.name for v in optimizer.variables}
    assert names == {"iteration", "learning_rate"}


BAD_ARGUMENTS = [
    (dict(learning_rate=-1.0), "learning_rate", "-1.0"),
    (dict(num_iterations=0), "num_iterations", "integer >= 1"),
    (dict(num_iterations=2.5), "num_iterations", "integer >= 1"),
    (dict(sinkhorn_epsilon=-1e-8), "sinkhorn_epsilon", "> 0"),
    (dict(sinkhorn_epsilon=0.0), "sinkhorn_epsilon", "> 0"),
    (dict(output_scale="frobenius"), "output_scale", "'unit_frobenius'"),
    (dict(weight_decay=-1e-4), "weight_decay", ">= 0"),
    (dict(adam_beta_1=1.0), "adam_beta_1", "[0, 1)"),
    (dict(adam_beta_2=-0.1), "adam_beta_2", "[0, 1)"),
    (dict(epsilon=-1e-7), "epsilon", "> 0"),
    (dict(adam_lr_ratio=-1.0), "adam_lr_ratio", ">= 0"),
    (dict(exclude_layers=[3]), "exclude_layers", "regular expressions"),
    (dict(exclude_layers=["("]), "exclude_layers", "regular expressions"),
    (dict(exclude_embeddings="yes"), "exclude_embeddings", "bool"),
]


@pytest.mark.parametrize("kwargs,name,fragment", BAD_ARGUMENTS)
def test_bad_arguments_raise_clear_errors(kwargs, name, fragment):
    harness.assert_clear_error(SinkGD, kwargs, name, fragment)
