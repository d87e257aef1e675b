"""SinkGD on the torch backend: in-place updates, few full-size temporaries.

For a matrix, the generic step's SR-Sinkhorn iterates only the row and
column scale vectors, each norm a matrix-vector product with `G**2`; here
the same operations, in the same order, run on torch tensors with `G**2`
made once, and the step `w -= lr * (rows * G * columns + decay * w)` runs
in place in that buffer (one dynamic-shape compiled graph for every matrix
once "auto" compiles; eagerly before). The buffer is kept and reused, so a
float32 matrix's step allocates no full-size tensor. The AdamW fallback
(rank <= 1 variables, embeddings, excluded layers) repeats
`SinkGD._adam_direction` with eager in-place torch operations.
"""

import functools
import math

import torch
from keras import ops

from keras_batchopt.src.backend.torch import compile_utils
from keras_batchopt.src.ops.bias_correction import bias_correction


def _sink_kernel(p, g, buf, rows, columns, *, neg_lr, weight_decay):
    """`SinkGD.update_step` for a matrix from its scale vectors, in place:
    `buf` (float32, the matrix's shape; its content is overwritten) holds
    `rows * g * columns`. A variable that is not decayed gets
    `weight_decay` 0. `addcmul_(x, y, s)` computes the generic
    `direction + w * decay` and `w - direction * lr` in one pass each (the
    CPU kernel may fuse the multiply and the add, one rounding fewer than
    the generic code): run eagerly (as "auto" does for its first seconds)
    this step allocates no full-size temporary for a float32 variable."""
    torch.mul(g.float(), rows, out=buf)  # = rows * g, faster
    buf.mul_(columns)
    direction = buf.to(p.dtype)
    direction.addcmul_(p, weight_decay)
    p.addcmul_(direction, neg_lr)


@functools.cache
def _kernel():
    return compile_utils.CompiledKernel(_sink_kernel, "SinkGD")


def _scratch(optimizer, g):
    """A float32 buffer of `g`'s shape, reused across matrices and steps.

    A fresh full-size tensor each step would cost more than the arithmetic:
    the allocator returns large blocks to the system, and every page of a
    new one faults on first touch. One buffer, grown to the largest matrix,
    is kept on the optimizer (it is scratch space, not optimizer state).
    """
    buffer = getattr(optimizer, "_torch_sink_gd_scratch", None)
    if (
        buffer is None
        or buffer.numel() < g.numel()
        or buffer.device != g.device
    ):
        buffer = torch.empty(g.numel(), dtype=torch.float32, device=g.device)
        optimizer._torch_sink_gd_scratch = buffer
    # Detached: no view base for the compiled graph to guard on.
    return buffer[: g.numel()].view(g.shape).detach()


def _scales(optimizer, g):
    """`SinkGD._sinkhorn`'s `(rows, columns)` for a `(fan_in, fan_out)`
    gradient, by the same operations in the same order, and `g**2` (in
    float32, in the optimizer's scratch buffer), which the caller may
    overwrite."""
    fan_in, fan_out = g.shape
    squares = torch.square(g.float(), out=_scratch(optimizer, g))
    rows = torch.ones((fan_in, 1), dtype=torch.float32, device=g.device)
    columns = torch.ones((1, fan_out), dtype=torch.float32, device=g.device)
    eps = optimizer.sinkhorn_epsilon
    for _ in range(optimizer.num_iterations):
        norms = columns * torch.sqrt(torch.matmul(rows.square().T, squares))
        columns = columns * torch.where(
            norms > 0, math.sqrt(fan_in) / torch.clamp(norms, min=eps), 1.0
        )
        norms = rows * torch.sqrt(torch.matmul(squares, columns.square().T))
        rows = rows * torch.where(
            norms > 0, math.sqrt(fan_out) / torch.clamp(norms, min=eps), 1.0
        )
    if optimizer.output_scale == "unit_frobenius":
        rows = rows / math.sqrt(fan_in * fan_out)
    return rows, columns, squares


def _bias_corrections(optimizer, dtype):
    """`SinkGD._adam_direction`'s two bias corrections, for `dtype`."""
    step = ops.cast(optimizer.iterations + 1, dtype)
    return (
        bias_correction(optimizer.adam_beta_1, step, dtype),
        bias_correction(optimizer.adam_beta_2, step, dtype),
    )


def _adam_update(optimizer, variable, p, g, i, lr, corrections):
    """`SinkGD._adam_direction` and the AdamW step, in place."""
    b1, b2 = optimizer.adam_beta_1, optimizer.adam_beta_2
    m = optimizer._momentums[i].value
    v = optimizer._velocities[i].value
    m.copy_(m * b1 + g * (1.0 - b1))
    v.copy_(v * b2 + torch.square(g) * (1.0 - b2))
    direction = m / corrections[0]
    v_hat = v / corrections[1]
    direction /= torch.sqrt(v_hat) + optimizer.epsilon
    if optimizer._decays(variable):
        direction += p * optimizer.weight_decay
    p.sub_(direction * (lr * optimizer.adam_lr_ratio))


can_use = compile_utils.can_use


@compile_utils.eager_timed
@torch.no_grad()
def update_step(optimizer, grads, variables, learning_rate):
    index = optimizer._get_variable_index
    kernel = _kernel().get(compile_utils.compile_now(optimizer))
    per_dtype = {}
    for variable, g in zip(variables, grads):
        p = variable.value
        if p.dtype not in per_dtype:
            lr = ops.cast(learning_rate, p.dtype).detach().clone()
            decay, no_decay = compile_utils.scalars(
                [optimizer.weight_decay or 0.0, 0.0], p.dtype, p.device
            )
            corrections = _bias_corrections(optimizer, p.dtype)
            per_dtype[p.dtype] = (lr, -lr, decay, no_decay, corrections)
        lr, neg_lr, decay, no_decay, corrections = per_dtype[p.dtype]
        i = index(variable)
        if optimizer._uses_adamw[i]:
            _adam_update(optimizer, variable, p, g, i, lr, corrections)
            continue
        fan_out = p.shape[-1]
        fan_in = p.numel() // fan_out
        # Detached 2-D aliases (no view base for the compiled graph to
        # guard on, as `compile_utils.flat`).
        p2 = p.view(fan_in, fan_out).detach()
        g2 = g.view(fan_in, fan_out).detach()
        rows, columns, squares = _scales(optimizer, g2)
        kernel(
            p2,
            g2,
            squares,
            rows,
            columns,
            neg_lr=neg_lr,
            weight_decay=decay if optimizer._decays(variable) else no_decay,
        )
