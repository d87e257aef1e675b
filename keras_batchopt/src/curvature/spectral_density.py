"""Stochastic Lanczos quadrature: the Hessian's spectral density."""

import numpy as np

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.curvature.hessian_vector_product import HessianOperator
from keras_batchopt.src.curvature.lanczos import lanczos
from keras_batchopt.src.curvature.lanczos import tridiagonal_eigh


class SpectralDensity:
    """Gauss quadrature nodes and weights of the Hessian's spectrum.

    `nodes[p]` and `weights[p]` come from probe `p` (the Ritz values of its
    Lanczos run and the squared first components of their vectors; the
    weights of a probe sum to 1). `dimension` is the number of parameters.
    """

    def __init__(self, nodes, weights, dimension):
        self.nodes = [np.asarray(n) for n in nodes]
        self.weights = [np.asarray(w) for w in weights]
        self.dimension = int(dimension)

    def density(self, grid, sigma=None):
        """The density on `grid`, each node smoothed by a Gaussian of width
        `sigma` (default: 1% of the spectrum's range), averaged over
        probes; it integrates to about 1."""
        grid = np.asarray(grid, np.float64)
        all_nodes = np.concatenate(self.nodes)
        if sigma is None:
            sigma = 0.01 * max(float(np.ptp(all_nodes)), 1e-12)
        sigma = validation.check_positive("sigma", sigma)
        out = np.zeros_like(grid)
        for n, w in zip(self.nodes, self.weights):
            gauss = np.exp(
                -((grid[:, None] - n[None, :]) ** 2) / (2 * sigma**2)
            )
            out += gauss @ w / (sigma * np.sqrt(2 * np.pi))
        return out / len(self.nodes)

    def trace(self):
        """The quadrature estimate of `tr(H)` (`dimension * v^T H v`)."""
        return float(
            np.mean(
                [
                    self.dimension * np.dot(n, w)
                    for n, w in zip(self.nodes, self.weights)
                ]
            )
        )

    def extreme_eigenvalues(self):
        """The smallest and the largest Ritz value over all probes."""
        all_nodes = np.concatenate(self.nodes)
        return float(all_nodes.min()), float(all_nodes.max())


@keras_batchopt_export("keras_batchopt.curvature.hessian_spectral_density")
def hessian_spectral_density(
    model,
    x,
    y,
    num_steps=50,
    num_probes=1,
    seed=0,
    sample_weight=None,
    batch_size=None,
):
    """The spectral density of the loss's Hessian by stochastic Lanczos
    quadrature (SLQ).

    For each of `num_probes` normalized Rademacher probes, `num_steps`
    Lanczos steps (full reorthogonalization, float64) give a tridiagonal
    matrix whose eigenvalues (nodes) and squared first eigenvector
    components (weights) are a Gauss quadrature of the spectral measure.
    The extreme nodes converge to the extreme eigenvalues first; with
    `num_steps` equal to the number of parameters the nodes are the
    eigenvalues.

    Args:
        model: a compiled `keras.Model`.
        x, y: inputs and targets.
        num_steps: an integer >= 1, Lanczos steps per probe (each one
            Hessian-vector product).
        num_probes: an integer >= 1.
        seed: an integer >= 0 for the NumPy probes.
        sample_weight: optional per-sample weights.
        batch_size: see `hessian_vector_product`.

    Returns:
        A `SpectralDensity` (`nodes`, `weights`, `density(grid, sigma)`,
        `trace()`, `extreme_eigenvalues()`).

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> model = keras.Sequential(
    ...     [keras.Input((2,)), keras.layers.Dense(1, use_bias=False)]
    ... )
    >>> model.compile(loss="mse")
    >>> x, y = np.array([[1.0, 0.0], [0.0, 2.0]]), np.zeros((2, 1))
    >>> sd = keras_batchopt.curvature.hessian_spectral_density(model, x, y, 2)
    >>> [round(float(v), 3) for v in sd.extreme_eigenvalues()]
    [1.0, 4.0]

    References:
        - [Ghorbani, Krishnan and Xiao, 2019](https://arxiv.org/abs/1901.10159),
          An investigation into neural net optimization via Hessian
          eigenvalue density.
        - [Yao et al., 2020](https://arxiv.org/abs/1912.07145), PyHessian.
        - Golub and Meurant, Matrices, Moments and Quadrature.
    """
    num_steps = validation.check_positive_int("num_steps", num_steps)
    num_probes = validation.check_positive_int("num_probes", num_probes)
    operator = HessianOperator(model, x, y, sample_weight, batch_size)
    rng = np.random.RandomState(validation.check_non_negative_int("seed", seed))
    nodes, weights = [], []
    for _ in range(num_probes):
        start = rng.choice([-1.0, 1.0], size=operator.dim)
        alpha, beta = lanczos(
            operator.matvec, start, min(num_steps, operator.dim)
        )
        values, vectors = tridiagonal_eigh(alpha, beta)
        nodes.append(values)
        weights.append(vectors[0, :] ** 2)
    return SpectralDensity(nodes, weights, operator.dim)
