"""SinkGD on the torch backend: in-place updates, few full-size temporaries.

For a matrix, the generic step's SR-Sinkhorn iterates only the row and
column scale vectors, each norm a matrix-vector product with `G**2`; here
the same operations, in the same order, run on torch tensors with `G**2`
made once, and the step `w -= lr * (rows * G * columns + decay * w)` runs
in place in that buffer (one dynamic-shape compiled graph for every matrix
once "auto" compiles; eagerly before), so the only full-size temporary of
a float32 matrix is `G**2`. The AdamW fallback (rank <= 1 variables,
embeddings, excluded layers) repeats `SinkGD._adam_direction` with eager
in-place torch operations.
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
    `weight_decay` 0. `addcmul_(x, y, s)` adds the rounded product `x * s`,
    as the generic `direction + w * decay` and `w - direction * lr` do, in
    one pass: run eagerly (as "auto" does for its first seconds) this step
    allocates no full-size temporary for a float32 variable."""
    torch.mul(rows, g.float(), out=buf)
    buf.mul_(columns)
    direction = buf.to(p.dtype)
    direction.addcmul_(p, weight_decay)
    p.addcmul_(direction, neg_lr)


@functools.cache
def _kernel():
    return compile_utils.CompiledKernel(_sink_kernel, "SinkGD")


def _scales(optimizer, g):
    """`SinkGD._sinkhorn`'s `(rows, columns)` for a `(fan_in, fan_out)`
    gradient, by the same operations in the same order, and `g**2` (in
    float32), which the caller may overwrite."""
    fan_in, fan_out = g.shape
    squares = g.float().square()
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


def _adam_update(optimizer, variable, p, g, i, lr):
    """`SinkGD._adam_direction` and the AdamW step, in place."""
    b1, b2 = optimizer.adam_beta_1, optimizer.adam_beta_2
    step = ops.cast(optimizer.iterations + 1, p.dtype)
    m = optimizer._momentums[i].value
    v = optimizer._velocities[i].value
    m.copy_(m * b1 + g * (1.0 - b1))
    v.copy_(v * b2 + torch.square(g) * (1.0 - b2))
    direction = m / bias_correction(b1, step, p.dtype)
    v_hat = v / bias_correction(b2, step, p.dtype)
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
            per_dtype[p.dtype] = (lr, -lr, decay, no_decay)
        lr, neg_lr, decay, no_decay = per_dtype[p.dtype]
        i = index(variable)
        if optimizer._uses_adamw[i]:
            _adam_update(optimizer, variable, p, g, i, lr)
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
