"""The nearest-candidate index of `strategies.nearest_noise`, on PyTorch.

PyTorch runs eagerly: the generic `keras.ops` code writes each float16
rounding, the difference, its square and the sum as separate tensors of
the candidates' size (`(B, k, D)`), each a pass over main memory. Here
the same operations, in the same order and the same dtypes, run on a few
samples at a time, on buffers reused in place, so that each sample's
candidates stay in the cache between the operations. Every element goes
through the same arithmetic and every row of the sum is reduced by the
same `torch.sum` over its `D` contiguous values, so the distances, and
the index (`torch.argmin`: the first on ties), are bit-identical.
"""

import torch

# Candidate elements per chunk: 10 samples of 64 candidates of 28x28,
# about 2 MB of float32. On the benchmark's (256, 64, 784), 2 shared CPU
# cores, chunks of 2**17 to 2**21 elements took 6 to 10 ms, the whole
# batch as one chunk 45 ms, the generic code 86 ms (noisy medians).
_CHUNK_ELEMENTS = 1 << 19


def _rounded(x):
    """`x` rounded to float16, in float32 (the generic double cast)."""
    return x.to(torch.float16).to(torch.float32)


def _chunk_distances(x, z, quantize, out):
    """Squared distances of the rows of `z` (`(c, k, D)`) to `x`
    (`(c, 1, D)`, already float32 and rounded) into `out` (`(c, k)`)."""
    if quantize:
        diff = z.to(torch.float16).to(torch.float32)
        torch.sub(x, diff, out=diff)
        half = diff.to(torch.float16)
        diff.copy_(half)
    elif z.dtype == torch.float32:
        diff = x - z
    else:
        diff = z.to(torch.float32)
        torch.sub(x, diff, out=diff)
    diff.mul_(diff)
    torch.sum(diff, dim=-1, out=out)


def nearest_index(x, z, quantize):
    """`argmin_j ||x_i - z_ij||` as `nearest_noise`'s generic code.

    Args:
        x: tensor `(B, 1, D)`: the data.
        z: tensor `(B, k, D)`: the candidates.
        quantize: see `nearest_noise`.

    Returns:
        An int32 tensor `(B,)`: the index of the nearest candidate, or
        None where this path does not apply (inside `torch.compile`,
        which fuses the generic code itself, or for non-contiguous
        inputs, whose generic sums may run in another order).
    """
    if torch.compiler.is_compiling():
        return None
    if not (x.is_contiguous() and z.is_contiguous()):
        return None
    with torch.no_grad():
        x = _rounded(x) if quantize else x.to(torch.float32)
        batch, k = z.shape[0], z.shape[1]
        step = max(1, _CHUNK_ELEMENTS // max(1, z[0].numel()))
        squares = torch.empty((batch, k), dtype=torch.float32, device=z.device)
        for start in range(0, batch, step):
            stop = min(batch, start + step)
            _chunk_distances(
                x[start:stop], z[start:stop], quantize, squares[start:stop]
            )
        distance = torch.sqrt_(squares)
        if quantize:
            distance = _rounded(distance)
        return torch.argmin(distance, dim=1).to(torch.int32)
