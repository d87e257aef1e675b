"""Adan on the torch backend: one fused in-place kernel per variable.

The generic `Adan.update_step` runs about fifteen `keras.ops` calls per
variable, each a full pass over memory with a fresh temporary. Here every
variable is updated by one kernel that reads `w, g, m, v, n, g_prev` once
and writes `w, m, v, n, g_prev` once, in place. The kernel is the torch
function `_adan_kernel`; it is compiled once by `torch.compile` (one
dynamic-shape graph over flattened tensors, so every variable of every
shape shares it) and runs eagerly when compilation is off or unavailable.
"""

import torch

from keras_batchopt.src.backend.torch import compile_utils
from keras_batchopt.src.backend.torch.compile_utils import flat


def _adan_kernel(
    p,
    g,
    m,
    v,
    n,
    prev,
    *,
    clip,
    later,
    keep_1,
    keep_2,
    keep_3,
    step_m,
    step_v,
    bc3_sqrt,
    shrink,
    grow,
    beta_2,
    one_minus_beta_1,
    one_minus_beta_2,
    one_minus_beta_3,
    epsilon,
):
    # Every float is a 0-d tensor and every tensor is 1-D, so one compiled
    # graph serves all variables, steps and hyperparameters. Weight decay is
    # `(p * shrink - update) / grow`: shrink = 1 - lr * wd for decoupled
    # decay, grow = 1 + lr * wd for proximal decay, 1 otherwise (exact).
    g = g * clip
    d = (g - prev) * later
    m.mul_(keep_1).addcmul_(g, one_minus_beta_1)
    v.mul_(keep_2).addcmul_(d, one_minus_beta_2)
    u = d.mul_(beta_2).add_(g)
    n.mul_(keep_3).addcmul_(u * u, one_minus_beta_3)
    denom = n.sqrt().div_(bc3_sqrt).add_(epsilon)
    update = torch.addcmul(m * step_m, v, step_v).div_(denom)
    p.mul_(shrink).sub_(update).div_(grow)
    prev.copy_(g)


_kernel = compile_utils.CompiledKernel(_adan_kernel, "Adan")

# The kernel's scalars that `Adan._step_coefficients` computes.
_COEFFICIENTS = (
    "later",
    "keep_1",
    "keep_2",
    "keep_3",
    "step_m",
    "step_v",
    "bc3_sqrt",
)


can_use = compile_utils.can_use


@compile_utils.eager_timed
@torch.no_grad()
def update_step(optimizer, grads, variables, learning_rate):
    values = [v.value for v in variables]
    device = values[0].device
    if optimizer.max_grad_norm:
        clip = compile_utils.global_norm_clip_factor(
            grads, optimizer.max_grad_norm, optimizer.epsilon
        )
    else:
        clip = torch.ones((), device=device)
    b1, b2, b3 = optimizer.beta_1, optimizer.beta_2, optimizer.beta_3
    constants = {
        # `shrink` and `grow` are 1 for a variable that is not decayed (two
        # distinct tensors: the compiled graph guards on aliasing between
        # its inputs).
        "shrink": 1.0,
        "grow": 1.0,
        "beta_2": b2,
        "one_minus_beta_1": 1.0 - b1,
        "one_minus_beta_2": 1.0 - b2,
        "one_minus_beta_3": 1.0 - b3,
        "epsilon": optimizer.epsilon,
    }
    # The step's scalars, once per dtype (the same function as the generic
    # path computes them with), and the constants.
    scalars = {}
    decays = {}
    for dtype in {p.dtype for p in values}:
        c = optimizer._step_coefficients(learning_rate, dtype)
        tensors = compile_utils.scalars(list(constants.values()), dtype, device)
        named = dict(zip(constants, tensors))
        named.update({name: c[name] for name in _COEFFICIENTS})
        named["clip"] = clip.to(dtype)
        scalars[dtype] = named
        decays[dtype] = c["decay"]
    # Proximal decay divides by `grow`, decoupled decay multiplies `shrink`.
    decay_slot = "shrink" if optimizer.no_prox else "grow"
    index = optimizer._get_variable_index
    for variable, p, g in zip(variables, values, grads):
        kernel = _kernel.get(compile_utils.compile_now(optimizer, p.numel()))
        named = scalars[p.dtype]
        if optimizer._decays(variable):
            named = {**named, decay_slot: decays[p.dtype]}
        i = index(variable)
        kernel(
            flat(p),
            flat(g),
            flat(optimizer._exp_avgs[i].value),
            flat(optimizer._exp_avg_diffs[i].value),
            flat(optimizer._exp_avg_sqs[i].value),
            flat(optimizer._prev_grads[i].value),
            **named,
        )
