"""Region sums and selections on PyTorch, for RegionNormalization.

PyTorch runs eagerly: every masked select or product writes a tensor of
the input's size, and so does its gradient. Here both regions'
per-channel sums are one matrix product with the one-hot region weights
`w` (`(positions, 2)`), and a selection is the product `w @ table` (exact:
each row of `w` is one-hot), added to `base` in the same call (`addmm`);
their gradients are products too. The products need float32 matrix
multiplication at full precision (PyTorch's default): where TF32 or
bfloat16 is allowed, the masked sums and selects are used instead.

Layouts: the channels are last (`x` is viewed as `(positions, C)`) or on
axis 1 (`x` as `(batch, C, positions)`, a batched product).
"""

import torch


def _exact_products(dtype):
    """Whether a float32 matrix product is computed in float32."""
    if dtype == torch.float64:
        return True
    if torch.get_float32_matmul_precision() != "highest":
        return False
    if torch.backends.cuda.matmul.allow_tf32:
        return False
    for backend in (
        torch.backends,
        torch.backends.cuda.matmul,
        getattr(torch.backends.mkldnn, "matmul", None),
    ):
        # PyTorch >= 2.9 also has per-backend settings ("none": default).
        setting = getattr(backend, "fp32_precision", "none")
        if setting not in ("none", "ieee"):
            return False
    return True


def _weights(mask, axis):
    mask = mask.detach()
    if axis == mask.dim() - 1:
        column = mask.reshape(-1, 1)
    else:
        column = mask.reshape(mask.shape[0], -1, 1)
    return torch.cat([column, 1.0 - column], dim=-1)


def _weights_per_sample(mask, axis):
    """One-hot `(batch, positions, 2)` weights."""
    column = mask.detach().reshape(mask.shape[0], -1, 1)
    return torch.cat([column, 1.0 - column], dim=-1)


def region_sums(x, mask, axis):
    """See `statistics.region_sums`."""
    axis = axis % x.dim()
    mask = mask.to(x.dtype)
    if not _exact_products(x.dtype):
        axes = [i for i in range(x.dim()) if i != axis]
        return torch.stack([(x * mask).sum(axes), (x * (1.0 - mask)).sum(axes)])
    # Per sample, then summed over the batch (`sum` adds pairwise): a
    # product accumulates its positions one after the other, which over
    # the whole batch loses more of large-mean inputs.
    w = _weights_per_sample(mask, axis)
    if axis == x.dim() - 1:
        rows = x.reshape(x.shape[0], -1, x.shape[-1])
        return torch.bmm(w.transpose(1, 2), rows).sum(0)
    rows = x.reshape(x.shape[0], x.shape[1], -1)
    return torch.bmm(rows, w).sum(0).t()


def region_select(table, mask, axis, base=None):
    """See `statistics.region_select`."""
    axis = axis % mask.dim()
    mask = mask.to(table.dtype)
    if not _exact_products(table.dtype):
        shape = [1] * mask.dim()
        shape[axis] = -1
        selected = torch.where(
            mask > 0.5, table[0].reshape(shape), table[1].reshape(shape)
        )
        return selected if base is None else base + selected
    w = _weights(mask, axis)
    if axis == mask.dim() - 1:
        shape = mask.shape[:-1] + table.shape[1:]
        if base is None:
            return (w @ table).reshape(shape)
        rows = base.reshape(-1, table.shape[1])
        return torch.addmm(rows, w, table).reshape(shape)
    shape = (mask.shape[0], table.shape[1]) + tuple(mask.shape[2:])
    # (batch, C, positions) = table.T @ w.T per sample.
    per_channel = table.t().unsqueeze(0).expand(mask.shape[0], -1, -1)
    w_t = w.transpose(1, 2)
    if base is None:
        return torch.bmm(per_channel, w_t).reshape(shape)
    rows = base.reshape(mask.shape[0], table.shape[1], -1)
    return torch.baddbmm(rows, per_channel, w_t).reshape(shape)
