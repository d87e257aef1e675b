"""The torch path of `nearest_noise`
(keras_batchopt/src/backend/torch/nearest_noise.py) against the generic
`keras.ops` code (fast paths off): bit-identical picks and indices, with
exact ties and near-ties, several shapes and chunkings, float32 and
float16 inputs. The generic code itself is tested against a NumPy port of
the official code in test_noise_assignment.py."""

import numpy as np
import pytest
import torch

import keras_batchopt
from keras_batchopt import strategies
from keras_batchopt.src.strategies import nearest_noise as generic
from tests.conftest import spy_on

MODULE = "keras_batchopt.src.backend.torch.nearest_noise"


def _inputs(batch, k, shape, seed):
    """Uniform data and Gaussian candidates, with ties and near-ties."""
    rng = np.random.default_rng(seed)
    data = rng.uniform(-1, 1, (batch,) + shape).astype("float32")
    candidates = rng.normal(size=(batch, k) + shape).astype("float32")
    if k >= 4:
        # An exact tie: the same candidate twice (the first one wins).
        candidates[:, 3] = candidates[:, 1]
        # A near-tie: one float32 ulp apart in one element (the same
        # float16 value); and the mirror image through the data, whose
        # distance differs only by rounding.
        candidates[:, 2] = candidates[:, 0]
        flat = candidates[:, 2].reshape(batch, -1)
        flat[:, 0] = np.nextafter(flat[:, 0], np.float32(np.inf))
        candidates[:, 2] = flat.reshape(candidates[:, 2].shape)
        candidates[:, -1] = 2.0 * data - candidates[:, 0]
        # Make the tied candidates the nearest for half of the samples.
        candidates[::2, 0] = data[::2] + 0.01
        candidates[::2, 1] = data[::2] - 0.01
        candidates[::2, 3] = candidates[::2, 1]
        candidates[::2, 2] = candidates[::2, 0]
    return data, candidates


def _both(data, candidates, quantize):
    with keras_batchopt.config.fast_paths(False):
        expected = strategies.nearest_noise(data, candidates, quantize)
    out = strategies.nearest_noise(data, candidates, quantize)
    return out.numpy(), expected.numpy()


def _indices(data, candidates, quantize):
    from keras_batchopt.src.backend.torch import nearest_noise as fast

    batch, k = candidates.shape[:2]
    x = torch.as_tensor(data).reshape(batch, 1, -1)
    z = torch.as_tensor(candidates).reshape(batch, k, -1)
    ours = fast.nearest_index(x, z, quantize)
    theirs = generic._nearest_index(x, z, quantize)
    return ours.numpy(), theirs.numpy()


@pytest.mark.parametrize("quantize", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize(
    "batch, k, shape, chunk",
    [
        (1, 1, (3,), None),
        (7, 5, (4, 4, 1), None),
        (9, 6, (5, 3), 40),  # chunks of 1 sample
        (33, 4, (6,), 100),  # chunks of 4 samples, then 1
        (13, 64, (28, 28, 1), None),  # chunks of 10, then 3
    ],
)
def test_same_pick_as_the_generic_code(
    batch, k, shape, chunk, dtype, quantize, monkeypatch
):
    if chunk is not None:
        monkeypatch.setattr(f"{MODULE}._CHUNK_ELEMENTS", chunk)
    calls = spy_on(MODULE, "nearest_index", monkeypatch)
    for seed in range(3):
        data, candidates = _inputs(batch, k, shape, seed)
        data, candidates = data.astype(dtype), candidates.astype(dtype)
        out, expected = _both(data, candidates, quantize)
        assert out.dtype == expected.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(out, expected)
        ours, theirs = _indices(data, candidates, quantize)
        np.testing.assert_array_equal(ours, theirs)
        if k >= 4:
            # The exact tie keeps the first candidate (1, not 3).
            assert set(ours[::2].tolist()) <= {0, 1, 2}
    assert len(calls) == 6  # 3 through nearest_noise, 3 direct


def test_near_ties_decided_by_the_float16_roundings():
    # Candidates 0 and 1 are nearer or farther only below float16's
    # resolution: float16 distances tie (the first wins), float32 ones
    # pick candidate 1.
    data = np.zeros((2, 1, 8), "float32")
    candidates = np.full((2, 3, 1, 8), 2.0, "float32")
    candidates[:, 0] = 0.5
    candidates[:, 1] = 0.5
    candidates[:, 1, 0, 0] = np.float32(0.5) - np.float32(2e-5)
    for quantize, index in ((True, 0), (False, 1)):
        ours, theirs = _indices(data, candidates, quantize)
        assert ours.tolist() == theirs.tolist() == [index, index]


def test_fast_paths_off_and_non_contiguous_run_the_generic_code(monkeypatch):
    data, candidates = _inputs(5, 6, (3, 2), seed=7)
    calls = spy_on(MODULE, "nearest_index", monkeypatch)
    with keras_batchopt.config.fast_paths(False):
        strategies.nearest_noise(data, candidates)
    assert not calls
    # A transposed view: the torch path declines it (returns None).
    transposed = torch.as_tensor(candidates.transpose(0, 1, 3, 2).copy())
    transposed = transposed.transpose(2, 3)
    assert not transposed.is_contiguous()
    from keras_batchopt.src.backend.torch import nearest_noise as fast

    z = transposed.reshape(5, 6, -1)  # copies: contiguous
    x = torch.as_tensor(data).reshape(5, 1, -1)
    assert fast.nearest_index(x, z[:, ::2], True) is None
    out, expected = _both(data, transposed, True)
    np.testing.assert_array_equal(out, expected)
