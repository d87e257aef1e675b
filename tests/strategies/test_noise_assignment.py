"""Immiscible Diffusion noise assignment: the exact (host) assignment and
the KNN version in keras.ops, against brute force, SciPy and a NumPy port
of the official code."""

import keras
import numpy as np
import pytest

from keras_batchopt import strategies
from keras_batchopt.src.strategies import linear_assignment
from keras_batchopt.src.strategies.assign_noise import assignment_distances
from tests.references import immiscible_numpy as ref

BACKEND = keras.backend.backend()


def _batch(batch, shape=(4, 4, 1), seed=0):
    rng = np.random.default_rng(seed)
    data = rng.uniform(-1, 1, (batch,) + shape).astype("float32")
    noise = rng.normal(size=(batch,) + shape).astype("float32")
    return data, noise


def _total(cost, indices):
    return float(np.sum(cost[np.arange(cost.shape[0]), indices]))


@pytest.mark.parametrize("quantize", [True, False])
@pytest.mark.parametrize("solver", ["auto", "numpy"])
def test_assignment_is_the_brute_force_optimum(quantize, solver):
    for batch in range(1, 7):
        data, noise = _batch(batch, seed=batch)
        out, indices = strategies.assign_noise(
            data, noise, quantize=quantize, solver=solver, return_indices=True
        )
        np.testing.assert_array_equal(out, noise[indices])
        assert sorted(indices.tolist()) == list(range(batch))
        cost = assignment_distances(data, noise, quantize=quantize)
        assert _total(cost, indices) == pytest.approx(
            ref.brute_force_cost(cost), abs=1e-12
        )


def test_numpy_solver_matches_scipy():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(1)
    costs = [
        rng.random((40, 40)),
        np.round(rng.random((30, 30)) * 3),  # many ties
        np.zeros((5, 5)),
        rng.normal(size=(1, 1)),
    ]
    for cost in costs:
        ours = linear_assignment.numpy_linear_sum_assignment(cost)
        rows, cols = scipy_optimize.linear_sum_assignment(cost)
        assert sorted(ours.tolist()) == list(range(cost.shape[0]))
        assert _total(cost, ours) == pytest.approx(
            float(np.sum(cost[rows, cols])), abs=1e-9
        )


def test_distances_match_the_official_float16_matrix():
    data, noise = _batch(48, shape=(28, 28, 1), seed=2)
    ours = assignment_distances(data, noise)
    official = ref.official_distances(data, noise).astype(np.float64)
    ulp = np.spacing(official.astype(np.float16)).astype(np.float64)
    assert np.all(np.abs(ours - official) <= ulp)
    assert np.mean(ours == official) > 0.95  # 98% measured


def test_assignment_is_optimal_for_the_official_matrix():
    scipy_optimize = pytest.importorskip("scipy.optimize")
    data, noise = _batch(64, shape=(28, 28, 1), seed=3)
    _, indices = strategies.assign_noise(data, noise, return_indices=True)
    official = ref.official_distances(data, noise).astype(np.float64)
    _, cols = scipy_optimize.linear_sum_assignment(official)
    # Ours solves a matrix that differs from the official one by one
    # float16 ulp in about 2% of the entries: the totals agree to a few
    # ulps.
    assert _total(official, indices) == pytest.approx(
        _total(official, cols), abs=5 * 2.0**-8
    )
    identity = _total(official, np.arange(64))
    assert _total(official, indices) < identity


def test_assign_noise_accepts_tensors_and_keeps_dtype():
    data, noise = _batch(6)
    out = strategies.assign_noise(
        keras.ops.convert_to_tensor(data), keras.ops.convert_to_tensor(noise)
    )
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_array_equal(out, strategies.assign_noise(data, noise))


def test_shape_and_argument_errors_name_the_values():
    data, noise = _batch(4)
    with pytest.raises(ValueError, match=r"\(4, 4, 4, 1\).*\(3, 4, 4, 1\)"):
        strategies.assign_noise(data, noise[:3])
    with pytest.raises(ValueError, match="solver='hungarian'"):
        strategies.assign_noise(data, noise, solver="hungarian")
    with pytest.raises(ValueError, match=r"\(4, 4, 4, 1\).*\(4, 2, 4, 4\)"):
        strategies.nearest_noise(data, np.zeros((4, 2, 4, 4), "float32"))
    with pytest.raises(ValueError, match="k=0"):
        strategies.sample_nearest_noise(data, k=0)


def _candidates(batch=8, k=16, shape=(6, 6, 1), seed=4):
    rng = np.random.default_rng(seed)
    data = rng.uniform(-1, 1, (batch,) + shape).astype("float32")
    candidates = rng.normal(size=(batch, k) + shape).astype("float32")
    # Sample 0: two distinct candidates at the same distance; the official
    # torch.min keeps the first.
    data[0] = 0.0
    candidates[0] = 3.0
    candidates[0, 5] = candidates[0, 9] = 0.0
    candidates[0, 5].flat[0] = 1.0
    candidates[0, 9].flat[1] = 1.0
    return data, candidates


def _compiled(fn):
    if BACKEND == "jax":
        import jax

        return jax.jit(fn)
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    import torch

    # One graph with no break (fullgraph) through AOTAutograd; Inductor's
    # code generation would add ~15 s of CPU compile time.
    return torch.compile(fn, fullgraph=True, backend="aot_eager")


@pytest.mark.parametrize(
    "compiled, quantize",
    [(False, True), (False, False), (True, True)],
    ids=["eager", "eager-float32", "jit"],
)
def test_nearest_noise_matches_the_official_pick(compiled, quantize):
    data, candidates = _candidates()
    expected = ref.official_nearest(data, candidates)
    if not quantize:
        diff = (data[:, None] - candidates).reshape(8, 16, -1)
        index = np.argmin(np.linalg.norm(diff, axis=2), axis=1)
        expected = candidates[np.arange(8), index]
    fn = strategies.nearest_noise
    if compiled:
        fn = _compiled(lambda d, c: strategies.nearest_noise(d, c, quantize))
        out = fn(
            keras.ops.convert_to_tensor(data),
            keras.ops.convert_to_tensor(candidates),
        )
    else:
        out = fn(data, candidates, quantize=quantize)
    out = keras.ops.convert_to_numpy(out)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out[0], candidates[0, 5])


class _Noise(keras.layers.Layer):
    def __init__(self, k, **kwargs):
        super().__init__(**kwargs)
        self.k = k
        self.seed = keras.random.SeedGenerator(1)

    def call(self, x):
        return strategies.sample_nearest_noise(x, k=self.k, seed=self.seed)

    def compute_output_shape(self, input_shape):
        return input_shape


def test_sample_nearest_noise_in_a_compiled_model():
    data = np.random.default_rng(5).uniform(-1, 1, (16, 8, 8, 1))
    data = data.astype("float32")
    distances = {}
    for k in (1, 32):
        model = keras.Sequential([keras.Input((8, 8, 1)), _Noise(k)])
        model.compile(jit_compile=BACKEND != "torch")
        first = model.predict_on_batch(data)
        second = model.predict_on_batch(data)
        assert first.shape == data.shape and np.all(np.isfinite(first))
        assert not np.array_equal(first, second)  # the seed advances
        distances[k] = np.linalg.norm((first - data).reshape(16, -1), axis=1)
    # The nearest of 32 draws is closer than a single draw, by far more
    # than the spread of the norm of a 64-dimensional Gaussian.
    assert distances[32].mean() < distances[1].mean() - 0.5
