"""Immiscible Diffusion: exact noise-to-data assignment on the host."""

import numpy as np

from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.strategies import linear_assignment


def _to_numpy(x, name):
    if isinstance(x, (np.ndarray, np.generic, list, tuple)):
        return np.asarray(x)
    try:
        import keras

        return np.asarray(keras.ops.convert_to_numpy(x))
    except Exception as error:
        raise ValueError(
            f"Argument `{name}` must be an array or a tensor. "
            f"Received: {name} of type {type(x).__name__}"
        ) from error


def _quantize(x, scale):
    """`float16(scale * float16(x))`, the product taken in float32 (as
    PyTorch multiplies a half tensor by a Python float)."""
    half = x.astype(np.float16).astype(np.float32)
    return (half * np.float32(scale)).astype(np.float16)


def assignment_distances(data, noise, scale=0.1, quantize=True):
    """The (B, B) matrix `||scale * data[i] - scale * noise[j]||_2`.

    With `quantize=True` both operands are rounded to float16 first and the
    distances are rounded to float16 at the end, as the official code does;
    the distance itself is computed in float32 from the quantized operands
    (float64 without quantization).
    """
    x = data.reshape(data.shape[0], -1)
    z = noise.reshape(noise.shape[0], -1)
    if quantize:
        # Products of float16 values are exact in float32; the float32
        # sums are then ~1e-6 relative, far below a float16 ulp (5e-4).
        x = _quantize(x, scale).astype(np.float32)
        z = _quantize(z, scale).astype(np.float32)
    else:
        x = x.astype(np.float64) * scale
        z = z.astype(np.float64) * scale
    squared = np.einsum("ij,ij->i", x, x)[:, None] - 2.0 * (x @ z.T)
    squared += np.einsum("ij,ij->i", z, z)[None, :]
    distances = np.sqrt(np.maximum(squared, 0.0))
    if quantize:
        distances = distances.astype(np.float16)
    distances = distances.astype(np.float64)
    return distances


@keras_batchopt_export("keras_batchopt.strategies.assign_noise")
def assign_noise(
    data,
    noise,
    scale=0.1,
    quantize=True,
    solver="auto",
    return_indices=False,
):
    """Permutes a batch of noise so that its total distance to the data is
    smallest (Immiscible Diffusion, linear-assignment version).

    For data `x` and noise `z` of the same shape `(B, ...)` it builds the
    distance matrix `C[i, j] = ||0.1 x_i - 0.1 z_j||_2` and solves the
    linear assignment problem `min_p sum_i C[i, p(i)]` over permutations
    `p`; the result is `z[p]`, so that `noise_i` is the noise sample
    assigned to `data_i`. Each noise sample is still used exactly once, so
    the batch of noise stays a Gaussian sample; only its pairing with the
    images changes. The data are left as they are; sample the diffusion
    timesteps after the assignment.

    This runs on the host (NumPy, outside any compiled graph) and costs
    O(B^3) for the assignment. Call it in the input pipeline, or use
    `keras_batchopt.strategies.nearest_noise`, which runs inside a
    compiled train step.

    Args:
        data: array or tensor of shape `(B, ...)`: the clean training
            samples (or latents) of the batch.
        noise: array or tensor with the same shape as `data`: the Gaussian
            noise drawn for the batch.
        scale: the factor applied to both before the distance (0.1 in the
            official code, where it keeps the float16 distances finite).
        quantize: round the scaled operands and the distances to float16,
            as the official code does (ties are then broken by the solver).
            `False` uses float64 throughout.
        solver: "auto" (SciPy's `linear_sum_assignment` when SciPy is
            installed, else a NumPy Jonker-Volgenant solver), "scipy" or
            "numpy". SciPy is not a dependency of keras_batchopt.
        return_indices: also return the permutation `p` (NumPy int array).

    Returns:
        A NumPy array, `noise` reordered (same dtype as `noise`), and
        `p` if `return_indices=True`.

    Example:

    >>> import numpy as np
    >>> import keras_batchopt
    >>> data = np.array([[3.0, 3.0], [-3.0, -3.0]], "float32")
    >>> noise = np.array([[-1.0, -1.0], [1.0, 1.0]], "float32")
    >>> keras_batchopt.strategies.assign_noise(data, noise).tolist()
    [[1.0, 1.0], [-1.0, -1.0]]

    References:
        - Li et al. "Immiscible Diffusion: Accelerating Diffusion Training
          with Noise Assignment." NeurIPS 2024, arXiv:2406.12303.
        - Official code: https://github.com/yhli123/Immiscible-Diffusion
          (commit 2980078189d9637361805cdfa7748d9362e8bc00,
          `Linear_Assignment-stable_diffusion/conditional_scratch_train_sd.py`).
        - Crouse. "On implementing 2D rectangular assignment algorithms."
          IEEE TAES 2016 (the shortest-augmenting-path solver).

    Note:
        The official code rounds each elementwise difference to float16
        before the norm; here the norm of the float16 operands is computed
        in float32 (as `|a|^2 + |b|^2 - 2 a.b`) and then rounded to
        float16, so a distance can differ from the official one by one
        float16 unit in the last place (about 2% of the entries for 28x28
        images; the optimum moves by a few units). The
        multi-GPU gather/scatter of the official script is not reproduced:
        pass the global batch.
    """
    x = _to_numpy(data, "data")
    z = _to_numpy(noise, "noise")
    if x.shape != z.shape or x.ndim < 1:
        raise ValueError(
            "Arguments `data` and `noise` must have the same shape (B, ...). "
            f"Received: data.shape={x.shape}, noise.shape={z.shape}"
        )
    cost = assignment_distances(x, z, scale=scale, quantize=quantize)
    indices = linear_assignment.linear_sum_assignment(cost, solver=solver)
    assigned = z[indices]
    if return_indices:
        return assigned, np.asarray(indices)
    return assigned
