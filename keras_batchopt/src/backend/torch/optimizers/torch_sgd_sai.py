"""SGD-SaI on the torch backend: one compiled in-place kernel per variable.

The generic `update_step` recomputes the gradient's signal-to-noise ratio
every step and keeps it only on a variable's first gradient (a traced
graph cannot skip work on a value), and allocates its temporaries anew
each step. Here the ratio is computed on the host's say-so, only for the
variables that have none yet, with the generic path's own function, and
the momentum and variable updates run as one fused, in-place pass over
`w, g, buf`. Every per-step value is a 0-d tensor, so one dynamic-shape
graph serves every variable.
"""

import functools
import math

import torch
from keras import ops

from keras_batchopt.src.backend.torch import compile_utils
from keras_batchopt.src.backend.torch.compile_utils import flat
from keras_batchopt.src.ops.gradient_snr import gradient_snr


def _momentum_kernel(p, g, buf, *, lr, gsnr, momentum, dampening, decay, first):
    """The generic step's operations, in its order, in place."""
    averaged = buf * momentum + g * dampening
    buf.copy_(torch.where(first, g, averaged))
    step = buf * (lr * gsnr)
    p.copy_(p * decay - step)


def _plain_kernel(p, g, *, lr, gsnr, decay):
    p.copy_(p * decay - g * (lr * gsnr))


@functools.cache
def _kernel(with_momentum):
    fn = _momentum_kernel if with_momentum else _plain_kernel
    return compile_utils.CompiledKernel(fn, "SGDSaI")


can_use = compile_utils.can_use


def _grouped_update(optimizer, group, lr, decay, first=False):
    """The step for many small variables of one dtype at once, by
    multi-tensor operations (the generic step's operations and order).
    `first`: their first gradient, which the buffers already hold."""
    index = optimizer._get_variable_index
    ps = [p for _, p, _, _ in group]
    gs = [g for _, _, g, _ in group]
    scales = [lr * slot.to(p.dtype) for _, p, _, slot in group]
    if optimizer.momentum:
        bufs = [optimizer._momentums[index(v)].value for v, _, _, _ in group]
        if not first:
            torch._foreach_mul_(bufs, optimizer.momentum)
            torch._foreach_add_(
                bufs, torch._foreach_mul(gs, 1.0 - optimizer.momentum)
            )
        directions = bufs
    else:
        directions = gs
    steps = torch._foreach_mul(directions, scales)
    decayed = [p for (v, p, _, _) in group if optimizer._decays(v)]
    if decayed:
        torch._foreach_mul_(decayed, decay)
    torch._foreach_sub_(ps, steps)


@compile_utils.eager_timed
@torch.no_grad()
def update_step(optimizer, grads, variables, learning_rate):
    index = optimizer._get_variable_index
    slots = [optimizer._gsnrs[index(v)].value for v in variables]
    # One host read for every variable's "first gradient?" flag.
    unset = (torch.stack(slots) < 0).tolist()
    for variable, g, slot, first in zip(variables, grads, slots, unset):
        if first:
            size = math.prod(variable.shape)
            slot.copy_(
                gradient_snr(g, optimizer.epsilon, size, optimizer.official)
            )
    if optimizer.momentum:
        # A first gradient starts the buffer (the kernels' `where`).
        for variable, g, first in zip(variables, grads, unset):
            if first:
                optimizer._momentums[index(variable)].value.copy_(g)
    kernel = _kernel(bool(optimizer.momentum)).get(
        compile_utils.compile_now(optimizer)
    )
    per_dtype = {}

    def constants(p):
        if p.dtype not in per_dtype:
            lr = ops.cast(learning_rate, p.dtype).detach().clone()
            decay = 1.0 - lr * optimizer.weight_decay
            per_dtype[p.dtype] = (
                lr,
                decay,
                *compile_utils.scalars(
                    [optimizer.momentum, 1.0 - optimizer.momentum, 1.0],
                    p.dtype,
                    p.device,
                ),
            )
        return per_dtype[p.dtype]

    values = [v.value for v in variables]
    groups, large = compile_utils.split_by_size(
        variables, values, list(zip(grads, slots, unset))
    )
    for dtype, group in groups.items():
        lr, decay, *_ = constants(group[0][1])
        rest = [
            (v, p, g, slot)
            for v, p, (g, slot, first) in group
            if not (first and optimizer.momentum)
        ]
        firsts = [
            (v, p, g, slot)
            for v, p, (g, slot, first) in group
            if first and optimizer.momentum
        ]
        for part, is_first in ((rest, False), (firsts, True)):
            if part:
                _grouped_update(optimizer, part, lr, decay, is_first)
    for variable, p, (g, slot, first) in large:
        lr, decay, momentum, dampening, one = constants(p)
        factor = decay if optimizer._decays(variable) else one
        gsnr = slot.to(p.dtype)
        if optimizer.momentum:
            buf = flat(optimizer._momentums[index(variable)].value)
            flag = torch.tensor(first, device=p.device)
            kernel(
                flat(p),
                flat(g),
                buf,
                lr=lr,
                gsnr=gsnr,
                momentum=momentum,
                dampening=dampening,
                decay=factor,
                first=flag,
            )
        else:
            kernel(flat(p), flat(g), lr=lr, gsnr=gsnr, decay=factor)
