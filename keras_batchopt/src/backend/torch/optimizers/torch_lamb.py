"""LAMB on the torch backend: one compiled in-place kernel per variable.

The generic `Lamb.update_step` runs about fifteen `keras.ops` calls per
variable, each a full pass over memory with a fresh temporary. Here one
call per variable updates `m` and `v` in place, takes both norms (with the
package's shared `trust_ratio`) and applies the step: Inductor makes it a
reduction pass and an update pass, without full-size temporaries. Flags
that vary per variable (decay, adaptation) are 0-d tensors, so a single
dynamic-shape graph serves every variable, step and option. Small variables
skip the per-call overhead: they are updated together by multi-tensor
operations (`compile_utils.GROUP_MAX_NUMEL`).
"""

import math

import torch

from keras_batchopt.src.backend.torch import compile_utils
from keras_batchopt.src.backend.torch.compile_utils import flat
from keras_batchopt.src.ops.trust_ratio import trust_ratio


def _lamb_kernel(
    p,
    g,
    m,
    v,
    *,
    beta_1,
    one_minus_beta_1,
    beta_2,
    one_minus_beta_2,
    bc_1,
    bc_2,
    epsilon,
    lr,
    weight_decay,
    adapt,
    max_ratio,
):
    # The same operations, in the same order, as `Lamb.update_step`;
    # `weight_decay` is 0 for a variable that is not decayed (exact).
    m.mul_(beta_1).add_(g * one_minus_beta_1)
    v.mul_(beta_2).add_(g.square() * one_minus_beta_2)
    update = (m / bc_1) / ((v / bc_2).sqrt() + epsilon)
    update = update + p * weight_decay
    ratio = trust_ratio(
        compile_utils.l2_norm(p), compile_utils.l2_norm(update), xp=torch
    )
    ratio = torch.minimum(ratio, max_ratio)
    ratio = torch.where(adapt, ratio, torch.ones_like(ratio))
    p.sub_(update * (lr * ratio.to(p.dtype)))


_kernel = compile_utils.CompiledKernel(_lamb_kernel, "Lamb")


def _grouped_update(optimizer, group, c, max_ratio):
    """`Lamb.update_step` for many small variables of one dtype at once:
    multi-tensor operations, and the trust ratios as one vector."""
    indices = [optimizer._get_variable_index(v) for v, _, _ in group]
    ps = [p for _, p, _ in group]
    gs = [g for _, _, g in group]
    ms = [optimizer._momentums[i].value for i in indices]
    vs = [optimizer._velocities[i].value for i in indices]
    b1, b2 = optimizer.beta_1, optimizer.beta_2
    torch._foreach_mul_(ms, b1)
    torch._foreach_add_(ms, torch._foreach_mul(gs, 1.0 - b1))
    squares = torch._foreach_mul(gs, gs)
    torch._foreach_mul_(squares, 1.0 - b2)
    torch._foreach_mul_(vs, b2)
    torch._foreach_add_(vs, squares)
    update = torch._foreach_div(ms, c["bc_1"])
    denom = torch._foreach_div(vs, c["bc_2"])
    torch._foreach_sqrt_(denom)
    torch._foreach_add_(denom, optimizer.epsilon)
    torch._foreach_div_(update, denom)
    decay = [
        optimizer.weight_decay if optimizer._decays(v) else 0.0
        for v, _, _ in group
    ]
    torch._foreach_add_(update, torch._foreach_mul(ps, decay))
    ratio = trust_ratio(
        torch.stack(torch._foreach_norm(ps, 2, dtype=torch.float32)),
        torch.stack(torch._foreach_norm(update, 2, dtype=torch.float32)),
        xp=torch,
    )
    ratio = torch.minimum(ratio, max_ratio)
    adapt = torch.tensor(
        [optimizer._adapts[i] for i in indices], device=ratio.device
    )
    ratio = torch.where(adapt, ratio, torch.ones_like(ratio))
    torch._foreach_mul_(update, (c["lr"] * ratio.to(c["lr"].dtype)).unbind())
    torch._foreach_sub_(ps, update)


can_use = compile_utils.can_use


@compile_utils.eager_timed
@torch.no_grad()
def update_step(optimizer, grads, variables, learning_rate):
    values = [v.value for v in variables]
    device = values[0].device
    b1, b2 = optimizer.beta_1, optimizer.beta_2
    (max_ratio,) = compile_utils.scalars(
        [optimizer.max_trust_ratio or math.inf], torch.float32, device
    )
    scalars = {}
    coefficients = {}
    for dtype in {p.dtype for p in values}:
        c = coefficients[dtype] = optimizer._step_coefficients(
            learning_rate, dtype
        )
        # Distinct tensors for every slot: the compiled graph guards on
        # aliasing between its inputs.
        constants = {
            "beta_1": b1,
            "one_minus_beta_1": 1.0 - b1,
            "beta_2": b2,
            "one_minus_beta_2": 1.0 - b2,
            "epsilon": optimizer.epsilon,
        }
        tensors = compile_utils.scalars(list(constants.values()), dtype, device)
        named = dict(zip(constants, tensors))
        named.update(bc_1=c["bc_1"], bc_2=c["bc_2"], lr=c["lr"])
        # `weight_decay` is 0 for a variable that is not decayed.
        decays = compile_utils.scalars(
            [optimizer.weight_decay or 0.0, 0.0], dtype, device
        )
        scalars[dtype] = (named, decays)
    groups, large = compile_utils.split_by_size(variables, values, grads)
    for dtype, group in groups.items():
        _grouped_update(optimizer, group, coefficients[dtype], max_ratio)
    adapt_flags = torch.tensor([False, True], device=device).unbind()
    index = optimizer._get_variable_index
    kernel = _kernel.get(compile_utils.compile_now(optimizer))
    for variable, p, g in large:
        named, (decay, no_decay) = scalars[p.dtype]
        i = index(variable)
        kernel(
            flat(p),
            flat(g),
            flat(optimizer._momentums[i].value),
            flat(optimizer._velocities[i].value),
            **named,
            weight_decay=decay if optimizer._decays(variable) else no_decay,
            adapt=adapt_flags[optimizer._adapts[i]],
            max_ratio=max_ratio,
        )
