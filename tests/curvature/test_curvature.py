"""The curvature tools against closed-form Hessians, on every backend.

Two models whose Hessian is known exactly:
- least squares, `Dense(2, use_bias=False)` under MSE: the loss is
  `mean_i mean_k (x_i w_k - y_ik)**2`, so `H = (2 / (N K)) X^T X` for each
  output column `k` (block diagonal over the two columns);
- logistic regression, `Dense(1)` under binary cross-entropy from logits:
  `H = mean_i p_i (1 - p_i) [x_i; 1][x_i; 1]^T`.
Hutchinson estimates are checked exactly where the Hessian is diagonal and
within five standard deviations of their known variance elsewhere.
"""

import keras
import numpy as np
import pytest

from keras_batchopt import curvature

N, D = 24, 4


def data(seed=0):
    rng = np.random.RandomState(seed)
    x = rng.randn(N, D).astype("float32")
    y = rng.randn(N, 2).astype("float32")
    labels = (rng.rand(N, 1) > 0.5).astype("float32")
    return x, y, labels


def least_squares():
    model = keras.Sequential(
        [keras.Input((D,)), keras.layers.Dense(2, use_bias=False)]
    )
    model.compile(loss="mse")
    x, y, _ = data()
    x64 = x.astype(np.float64)
    block = 2.0 / (N * 2) * x64.T @ x64
    # Flattened kernel (D, 2) is row-major: index = 2 * d + k.
    hessian = np.zeros((2 * D, 2 * D))
    for k in range(2):
        idx = np.arange(D) * 2 + k
        hessian[np.ix_(idx, idx)] = block
    return model, x, y, hessian


def logistic_regression():
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(1)])
    rng = np.random.RandomState(4)
    model.layers[0].set_weights(
        [rng.randn(D, 1).astype("float32"), np.array([0.2], "float32")]
    )
    model.compile(loss=keras.losses.BinaryCrossentropy(from_logits=True))
    x, _, labels = data()
    kernel, bias = [w.astype(np.float64) for w in model.get_weights()]
    p = 1 / (1 + np.exp(-(x.astype(np.float64) @ kernel + bias)))
    x_tilde = np.concatenate([x, np.ones((N, 1))], axis=1).astype(np.float64)
    hessian = (x_tilde * (p * (1 - p))).T @ x_tilde / N
    return model, x, labels, hessian


MODELS = {"least_squares": least_squares, "logistic": logistic_regression}


def flat(arrays):
    return np.concatenate([np.asarray(a).ravel() for a in arrays])


def split_like(model, vector):
    out, start = [], 0
    for v in model.trainable_variables:
        size = int(np.prod(v.shape))
        out.append(vector[start : start + size].reshape(tuple(v.shape)))
        start += size
    return out


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hessian_vector_product_equals_closed_form(name):
    model, x, y, hessian = MODELS[name]()
    rng = np.random.RandomState(1)
    for _ in range(3):
        v = rng.randn(hessian.shape[0])
        hv = curvature.hessian_vector_product(model, x, y, split_like(model, v))
        np.testing.assert_allclose(flat(hv), hessian @ v, rtol=1e-4, atol=1e-5)


def test_batched_hessian_equals_full_batch():
    model, x, y, hessian = logistic_regression()
    v = np.random.RandomState(2).randn(hessian.shape[0])
    vectors = split_like(model, v)
    full = curvature.hessian_vector_product(model, x, y, vectors)
    batched = curvature.hessian_vector_product(
        model, x, y, vectors, batch_size=7
    )
    np.testing.assert_allclose(flat(batched), flat(full), rtol=1e-5, atol=1e-6)


def test_hutchinson_diagonal_is_exact_for_a_diagonal_hessian():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(1, use_bias=False)]
    )
    model.compile(loss="mse")
    x = np.diag([1.0, 2.0, 3.0]).astype("float32")
    y = np.zeros((3, 1), "float32")
    [d] = curvature.hutchinson_diagonal(model, x, y, num_samples=3, seed=5)
    np.testing.assert_allclose(d.ravel(), 2 / 3 * np.array([1, 4, 9]), 1e-5)
    out = curvature.hutchinson_trace(model, x, y, num_samples=4)
    assert out["trace"] == pytest.approx(2 / 3 * 14, rel=1e-5)
    assert out["standard_error"] == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hutchinson_estimates_within_their_known_variance(name):
    model, x, y, hessian = MODELS[name]()
    samples = 300
    off = hessian - np.diag(np.diag(hessian))
    diag = flat(curvature.hutchinson_diagonal(model, x, y, num_samples=samples))
    sigma = np.sqrt((off**2).sum(axis=1) / samples)
    assert np.all(np.abs(diag - np.diag(hessian)) <= 5 * sigma + 1e-5)
    out = curvature.hutchinson_trace(model, x, y, num_samples=samples)
    sigma_trace = np.sqrt(2 * (off**2).sum() / samples)
    assert abs(out["trace"] - np.trace(hessian)) <= 5 * sigma_trace
    # The estimate is not the exact value: the check above is not vacuous.
    assert not np.allclose(diag, np.diag(hessian), rtol=1e-3)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_top_eigenvalues_equal_numpy(name):
    model, x, y, hessian = MODELS[name]()
    eigenvalues = np.sort(np.linalg.eigvalsh(hessian))[::-1]
    out = curvature.top_hessian_eigenvalues(
        model, x, y, k=2, max_iterations=500, tolerance=1e-7
    )
    np.testing.assert_allclose(out["eigenvalues"], eigenvalues[:2], rtol=1e-3)
    top = flat(out["eigenvectors"][0])
    np.testing.assert_allclose(
        hessian @ top, eigenvalues[0] * top, rtol=1e-2, atol=1e-3
    )


@pytest.mark.parametrize("name", sorted(MODELS))
def test_spectral_density_nodes_are_the_eigenvalues(name):
    """With as many Lanczos steps as parameters the quadrature is exact."""
    model, x, y, hessian = MODELS[name]()
    eigenvalues = np.linalg.eigvalsh(hessian)
    n = hessian.shape[0]
    sd = curvature.hessian_spectral_density(
        model, x, y, num_steps=n, num_probes=2, seed=3
    )
    for nodes, weights in zip(sd.nodes, sd.weights):
        assert weights.sum() == pytest.approx(1.0, abs=1e-8)
        # Every node with weight is an eigenvalue.
        for node, weight in zip(nodes, weights):
            if weight > 1e-6:
                assert np.min(np.abs(eigenvalues - node)) < 1e-4 * max(
                    1.0, abs(node)
                )
    low, high = sd.extreme_eigenvalues()
    assert high == pytest.approx(eigenvalues.max(), rel=1e-4)
    # Quadrature of v^T H v for a Rademacher v/sqrt(n): mean of n v^T H v.
    rng = np.random.RandomState(3)
    probes = [rng.choice([-1.0, 1.0], size=n) for _ in range(2)]
    expected = np.mean([p @ hessian @ p for p in probes])
    assert sd.trace() == pytest.approx(expected, rel=1e-4)
    grid = np.linspace(low - 1, high + 1, 2001)
    density = sd.density(grid, sigma=0.05)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-3)


def test_bad_inputs_get_clear_errors():
    model = keras.Sequential([keras.Input((D,)), keras.layers.Dense(1)])
    x, _, labels = data()
    with pytest.raises(ValueError, match="must be compiled with a loss"):
        curvature.hutchinson_trace(model, x, labels)
    model.compile(loss="mse")
    with pytest.raises(ValueError, match="one array per trainable"):
        curvature.hessian_vector_product(model, x, labels, [np.ones((D, 1))])
    with pytest.raises(ValueError, match="shapes"):
        curvature.hessian_vector_product(
            model, x, labels, [np.ones((D, 2)), np.ones((1,))]
        )
    with pytest.raises(ValueError, match="Received: k=9"):
        curvature.top_hessian_eigenvalues(model, x, labels, k=9)
    with pytest.raises(ValueError, match="Received: num_samples=0"):
        curvature.hutchinson_diagonal(model, x, labels, num_samples=0)
    with pytest.raises(ValueError, match="Received: num_steps=0"):
        curvature.hessian_spectral_density(model, x, labels, num_steps=0)
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        curvature.hutchinson_trace(model, x, labels, batch_size=0)
