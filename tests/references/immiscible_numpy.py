"""NumPy reference for Immiscible Diffusion's noise assignment, written
from the official code.

Source: https://github.com/yhli123/Immiscible-Diffusion at commit
2980078189d9637361805cdfa7748d9362e8bc00:

* `Linear_Assignment-stable_diffusion/conditional_scratch_train_sd.py`:
  `distance = vector_norm(0.10 * latents.half().flatten(1)[:, None]
  - 0.10 * noise.half().flatten(1)[None], dim=2)` (every operation in
  float16, the norm accumulated in float32 and returned in float16), then
  `_, col = scipy.optimize.linear_sum_assignment(distance)` and
  `noise = noise[col]`.
* `KNN-stable_diffusion/conditional_scratch_train_sd.py`: k = 64 noise
  draws per latent, `distance = vector_norm(latents.half()[:, None]
  - noise.half(), dim=2)` (float16, no 0.1 factor), `torch.min(distance,
  dim=1)` (the first minimum) and a gather of the float32 noise.

PyTorch multiplies a half tensor by a Python float in float32 and rounds
the product to float16; NumPy's float16 arithmetic computes in float32 and
rounds, so the float16 subtraction matches PyTorch bit for bit.

`variant` switches exist only to prove the tests sensitive.
"""

import itertools

import numpy as np

CORRECT = "correct"


def _half_scaled(x, scale):
    half = x.astype(np.float16).astype(np.float32)
    return (half * np.float32(scale)).astype(np.float16)


def official_distances(data, noise, variant=CORRECT):
    """The official float16 distance matrix, shape (B, B)."""
    x = data.reshape(data.shape[0], -1)
    z = noise.reshape(noise.shape[0], -1)
    scale = 1.0 if variant == "no_scale" else 0.1
    a = _half_scaled(x, scale)[:, None, :]
    b = _half_scaled(z, scale)[None, :, :]
    diff = (a - b).astype(np.float32)  # float16 difference
    squared = np.sum(diff * diff, axis=2, dtype=np.float32)
    if variant == "squared":
        return squared.astype(np.float16)
    return np.sqrt(squared).astype(np.float16)


def brute_force_cost(cost):
    """The smallest `sum_i cost[i, p(i)]` over all permutations."""
    n = cost.shape[0]
    rows = np.arange(n)
    return min(
        float(np.sum(cost[rows, list(p)]))
        for p in itertools.permutations(range(n))
    )


def official_nearest(data, candidates, variant=CORRECT):
    """The official KNN pick: candidates (B, k, ...) -> (B, ...)."""
    batch, k = candidates.shape[:2]
    x = data.reshape(batch, 1, -1).astype(np.float16)
    z = candidates.reshape(batch, k, -1)
    diff = (x - z.astype(np.float16)).astype(np.float32)
    distance = np.sqrt(np.sum(diff * diff, axis=2, dtype=np.float32))
    distance = distance.astype(np.float16)
    if variant == "farthest":
        index = np.argmax(distance, axis=1)
    elif variant == "last_on_ties":
        index = k - 1 - np.argmin(distance[:, ::-1], axis=1)
    else:
        index = np.argmin(distance, axis=1)
    return z[np.arange(batch), index].reshape(data.shape)
