"""LARS on the torch backend: one compiled in-place kernel per variable.

One call per variable takes the norms (with the package's shared
`trust_ratio`), scales the decayed gradient and updates the momentum
buffer and the variable in place: a reduction pass over `w, g` and an
update pass over `w, g, buf`, without full-size temporaries. The trust mode
and the presence of a momentum buffer select one of four kernels; every
other option (Nesterov, LARC, per-variable decay and adaptation) is a 0-d
tensor, so each kernel is a single dynamic-shape graph. Small variables
skip the per-call overhead: they are updated together by multi-tensor
operations (`compile_utils.GROUP_MAX_NUMEL`).
"""

import functools

import torch
from keras import ops

from keras_batchopt.src.backend.torch import compile_utils
from keras_batchopt.src.backend.torch.compile_utils import flat
from keras_batchopt.src.ops.trust_ratio import larc_clip
from keras_batchopt.src.ops.trust_ratio import trust_ratio


def _scaled_step(
    sum_of_norms, p, g, *, lr, weight_decay, adapt, coefficient, epsilon, larc
):
    """`learning_rate * r * d`, as in `Lars.update_step`."""
    d = g + p * weight_decay.to(p.dtype)
    param_norm = compile_utils.l2_norm(p)
    if sum_of_norms:
        update_norm = compile_utils.l2_norm(g)
        denominator = update_norm + weight_decay * param_norm
    else:
        update_norm = compile_utils.l2_norm(d)
        denominator = update_norm
    ratio = trust_ratio(
        param_norm, update_norm, denominator, coefficient, epsilon, xp=torch
    )
    ratio = torch.where(larc, larc_clip(ratio, lr.float(), xp=torch), ratio)
    scale = torch.where(adapt, lr * ratio.to(p.dtype), lr)
    return d * scale


def _lars_kernel(sum_of_norms, p, g, buf, *, momentum, nesterov, **options):
    step = _scaled_step(sum_of_norms, p, g, **options)
    buf.mul_(momentum).add_(step)
    # Nesterov: momentum * buf + step; classic: buf (times 1, plus 0).
    p.sub_(torch.where(nesterov, buf * momentum + step, buf))


def _plain_kernel(sum_of_norms, p, g, **options):
    p.sub_(_scaled_step(sum_of_norms, p, g, **options))


@functools.cache
def _kernel(sum_of_norms, with_momentum):
    fn = _lars_kernel if with_momentum else _plain_kernel
    return compile_utils.CompiledKernel(
        functools.partial(fn, sum_of_norms), "Lars"
    )


def _grouped_update(optimizer, group, lr):
    """`Lars.update_step` for many small variables of one dtype at once:
    multi-tensor operations, and the trust ratios as one vector."""
    indices = [optimizer._get_variable_index(v) for v, _, _ in group]
    ps = [p for _, p, _ in group]
    gs = [g for _, _, g in group]
    decay = [
        optimizer.weight_decay if optimizer._decays(v) else 0.0
        for v, _, _ in group
    ]
    d = torch._foreach_mul(ps, decay)
    torch._foreach_add_(d, gs)
    param_norm = torch.stack(torch._foreach_norm(ps, 2, dtype=torch.float32))
    if optimizer.trust_mode == "sum_of_norms":
        update_norm = torch.stack(
            torch._foreach_norm(gs, 2, dtype=torch.float32)
        )
        denominator = update_norm + param_norm * torch.tensor(
            decay, device=param_norm.device
        )
    else:
        update_norm = torch.stack(
            torch._foreach_norm(d, 2, dtype=torch.float32)
        )
        denominator = update_norm
    ratio = trust_ratio(
        param_norm,
        update_norm,
        denominator,
        optimizer.trust_coefficient,
        optimizer.epsilon,
        xp=torch,
    )
    if optimizer.larc:
        ratio = larc_clip(ratio, lr.float(), xp=torch)
    adapt = torch.tensor(
        [optimizer._adapts[i] for i in indices], device=ratio.device
    )
    scale = torch.where(adapt, lr * ratio.to(lr.dtype), lr)
    torch._foreach_mul_(d, scale.unbind())
    if not optimizer.momentum:
        torch._foreach_sub_(ps, d)
        return
    bufs = [optimizer._momentums[i].value for i in indices]
    torch._foreach_mul_(bufs, optimizer.momentum)
    torch._foreach_add_(bufs, d)
    if optimizer.nesterov:
        update = torch._foreach_mul(bufs, optimizer.momentum)
        torch._foreach_add_(update, d)
        torch._foreach_sub_(ps, update)
    else:
        torch._foreach_sub_(ps, bufs)


can_use = compile_utils.can_use


@compile_utils.eager_timed
@torch.no_grad()
def update_step(optimizer, grads, variables, learning_rate):
    values = [v.value for v in variables]
    device = values[0].device
    # float32 scalars, each a distinct tensor (the graph guards on aliasing).
    decay, no_decay, coefficient, epsilon = compile_utils.scalars(
        [
            optimizer.weight_decay or 0.0,
            0.0,
            optimizer.trust_coefficient,
            optimizer.epsilon,
        ],
        torch.float32,
        device,
    )
    no, yes, larc, nesterov = torch.tensor(
        [False, True, optimizer.larc, optimizer.nesterov], device=device
    ).unbind()
    per_dtype = {}
    for dtype in {p.dtype for p in values}:
        (momentum,) = compile_utils.scalars([optimizer.momentum], dtype, device)
        lr = ops.cast(learning_rate, dtype).detach().clone()
        per_dtype[dtype] = (lr, momentum)
    with_momentum = bool(optimizer.momentum)
    kernel = _kernel(optimizer.trust_mode == "sum_of_norms", with_momentum).get(
        compile_utils.compile_now(optimizer)
    )
    groups, large = compile_utils.split_by_size(variables, values, grads)
    for dtype, group in groups.items():
        _grouped_update(optimizer, group, per_dtype[dtype][0])
    index = optimizer._get_variable_index
    for variable, p, g in large:
        lr, momentum = per_dtype[p.dtype]
        i = index(variable)
        options = {
            "lr": lr,
            "weight_decay": decay if optimizer._decays(variable) else no_decay,
            "adapt": yes if optimizer._adapts[i] else no,
            "coefficient": coefficient,
            "epsilon": epsilon,
            "larc": larc,
        }
        if with_momentum:
            buf = flat(optimizer._momentums[i].value)
            kernel(
                flat(p),
                flat(g),
                buf,
                momentum=momentum,
                nesterov=nesterov,
                **options,
            )
        else:
            kernel(flat(p), flat(g), **options)
