"""Immiscible Diffusion, KNN version: nearest of k noise candidates."""

import keras
from keras import ops

from keras_batchopt.src import config
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.backend import dispatch


def _check_shapes(data, candidates):
    data_shape = tuple(data.shape)
    shape = tuple(candidates.shape)
    if len(shape) != len(data_shape) + 1 or (
        shape[:1] + shape[2:] != data_shape
    ):
        raise ValueError(
            "Argument `candidates` must have shape (B, k) + data.shape[1:] "
            "for data of shape (B, ...). Received: "
            f"data.shape={data_shape}, candidates.shape={shape}"
        )


# backend name -> its `nearest_noise` module or None. Filled at import for
# the current backend: `torch.compile` cannot trace an import.
_MODULES = {}


def _backend_module():
    backend = dispatch.backend_name()
    if backend not in _MODULES:
        _MODULES[backend] = dispatch.backend_module(
            "nearest_noise", required=False
        )
    return _MODULES[backend]


_backend_module()


def _fast_module():
    """The backend's `nearest_noise` module (torch: the distances a few
    samples at a time, bit-identical), or None: no such module, or
    `keras_batchopt.config.fast_paths_enabled()` is False."""
    if not config.fast_paths_enabled():
        return None
    return _backend_module()


def _nearest_index(x, z, quantize):
    """The index `(B,)` of the nearest row of `z` `(B, k, D)` to `x`
    `(B, 1, D)`, with the official float16 roundings if `quantize`."""
    if quantize:
        x = ops.cast(ops.cast(x, "float16"), "float32")
        diff = x - ops.cast(ops.cast(z, "float16"), "float32")
        diff = ops.cast(ops.cast(diff, "float16"), "float32")
    else:
        diff = ops.cast(x, "float32") - ops.cast(z, "float32")
    distance = ops.sqrt(ops.sum(diff * diff, axis=-1))
    if quantize:
        distance = ops.cast(ops.cast(distance, "float16"), "float32")
    return ops.argmin(distance, axis=1)


@keras_batchopt_export("keras_batchopt.strategies.nearest_noise")
def nearest_noise(data, candidates, quantize=True):
    """Picks, for each sample, the nearest of its k noise candidates
    (Improved Immiscible Diffusion, KNN version).

    For data `x_i` and candidates `z_i1, ..., z_ik` it returns `z_ij*` with
    `j* = argmin_j ||x_i - z_ij||_2` (the first one on ties). There is no
    one-to-one constraint, so this is O(B k D) tensor work with no solver:
    it runs in `keras.ops` inside a compiled train step on every backend.

    Args:
        data: tensor of shape `(B, ...)`: the clean samples (or latents).
        candidates: tensor of shape `(B, k, ...)`: k Gaussian noise draws
            per sample.
        quantize: compute the distance as the official code does: the data,
            the candidates and their difference rounded to float16, the sum
            of squares in float32, the norm rounded to float16. `False`
            computes it in float32.

    Returns:
        A tensor of shape `data.shape`, in the dtype of `candidates`.

    Note:
        On torch (eager), the distances are computed a few samples at a
        time in place, with the same operations, so the pick is
        bit-identical; `keras_batchopt.config.fast_paths(False)` runs the
        generic code.

    Example:

    >>> import numpy as np
    >>> import keras, keras_batchopt
    >>> data = np.array([[2.0], [-2.0]], "float32")
    >>> candidates = np.array([[[-1.0], [1.0]], [[-1.0], [1.0]]], "float32")
    >>> out = keras_batchopt.strategies.nearest_noise(data, candidates)
    >>> keras.ops.convert_to_numpy(out).tolist()
    [[1.0], [-1.0]]

    References:
        - Li et al. "Immiscible Diffusion: Accelerating Diffusion Training
          with Noise Assignment." NeurIPS 2024, arXiv:2406.12303.
        - Li et al. "Improved Immiscible Diffusion: Accelerate Diffusion
          Training by Reducing Its Miscibility." arXiv:2505.18521.
        - Official code: https://github.com/yhli123/Immiscible-Diffusion
          (commit 2980078189d9637361805cdfa7748d9362e8bc00,
          `KNN-stable_diffusion/conditional_scratch_train_sd.py`, k = 64).
    """
    data = ops.convert_to_tensor(data)
    candidates = ops.convert_to_tensor(candidates)
    _check_shapes(data, candidates)
    batch, k = candidates.shape[0], candidates.shape[1]
    batch = ops.shape(candidates)[0] if batch is None else batch
    x = ops.reshape(data, (batch, 1, -1))
    z = ops.reshape(candidates, (batch, k, -1))
    index = None
    module = _fast_module()
    if module is not None:
        index = module.nearest_index(x, z, quantize)
    if index is None:
        index = _nearest_index(x, z, quantize)
    index = ops.reshape(ops.cast(index, "int32"), (batch, 1, 1))
    picked = ops.take_along_axis(z, index, axis=1)
    return ops.reshape(picked, ops.shape(data))


@keras_batchopt_export("keras_batchopt.strategies.sample_nearest_noise")
def sample_nearest_noise(data, k=64, seed=None, quantize=True):
    """Draws `k` standard-normal candidates per sample and returns the
    nearest one (`keras_batchopt.strategies.nearest_noise`).

    Args:
        data: tensor of shape `(B, ...)`.
        k: number of candidates per sample (64 in the official code);
            `k=1` is plain noise sampling.
        seed: int, `keras.random.SeedGenerator` or None, as for
            `keras.random.normal`. Inside a compiled JAX step pass a
            `SeedGenerator` (created outside the step).
        quantize: see `nearest_noise`.

    Returns:
        A tensor of shape `data.shape` (float dtype of `data`).

    Example:

    >>> import numpy as np
    >>> import keras_batchopt
    >>> data = np.zeros((4, 8, 8, 1), "float32")
    >>> noise = keras_batchopt.strategies.sample_nearest_noise(
    ...     data, k=16, seed=0)
    >>> tuple(noise.shape)
    (4, 8, 8, 1)

    References:
        - Li et al. "Improved Immiscible Diffusion: Accelerate Diffusion
          Training by Reducing Its Miscibility." arXiv:2505.18521.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(
            f"Argument `k` must be an integer >= 1. Received: k={k!r}"
        )
    data = ops.convert_to_tensor(data)
    dtype = data.dtype if "float" in str(data.dtype) else "float32"
    if None in tuple(data.shape)[1:]:
        raise ValueError(
            "Argument `data` must have a known shape after the batch axis. "
            f"Received: data.shape={tuple(data.shape)}"
        )
    batch = data.shape[0]
    batch = ops.shape(data)[0] if batch is None else batch
    shape = (batch, k) + tuple(data.shape[1:])
    candidates = keras.random.normal(shape, dtype=dtype, seed=seed)
    return nearest_noise(data, candidates, quantize=quantize)
