"""LAMB on the torch backend: one compiled in-place kernel per variable.

The generic `Lamb.update_step` runs about fifteen `keras.ops` calls per
variable, each a full pass over memory with a fresh temporary. Here one
call per variable updates `m` and `v` in place, takes both norms (with the
package's shared `trust_ratio`) and applies the step: Inductor makes it a
reduction pass and an update pass, without full-size temporaries. Flags
that vary per variable (decay, adaptation) are 0-d tensors, so a single
dynamic-shape graph serves every variable, step and option.
"""

import math

import torch

from keras_batchopt.src import config
from keras_batchopt.src.backend.torch import compile_utils
from keras_batchopt.src.backend.torch.compile_utils import flat
from keras_batchopt.src.ops.trust_ratio import l2_norm
from keras_batchopt.src.ops.trust_ratio import trust_ratio


def _lamb_kernel(
    p,
    g,
    m,
    v,
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
    ratio = torch.minimum(trust_ratio(l2_norm(p), l2_norm(update)), max_ratio)
    ratio = torch.where(adapt, ratio, torch.ones_like(ratio))
    p.sub_(update * (lr * ratio.to(p.dtype)))


_kernel = compile_utils.CompiledKernel(_lamb_kernel, "Lamb")


can_use = compile_utils.can_use


@torch.no_grad()
def update_step(optimizer, grads, variables, learning_rate):
    values = [v.value for v in variables]
    device = values[0].device
    b1, b2 = optimizer.beta_1, optimizer.beta_2
    max_ratio = optimizer.max_trust_ratio or math.inf
    scalars = {}
    for dtype in {p.dtype for p in values}:
        c = optimizer._step_coefficients(learning_rate, dtype)
        constants = compile_utils.scalars(
            [b1, 1.0 - b1, b2, 1.0 - b2], dtype, device
        )
        # Distinct tensors for every slot: the compiled graph guards on
        # aliasing between its inputs.
        epsilon, decay, no_decay = compile_utils.scalars(
            [optimizer.epsilon, optimizer.weight_decay or 0.0, 0.0],
            dtype,
            device,
        )
        (max_ratio_t,) = compile_utils.scalars(
            [max_ratio], torch.float32, device
        )
        scalars[dtype] = (
            constants,
            [c["bc_1"], c["bc_2"], epsilon, c["lr"]],
            decay,
            no_decay,
            max_ratio_t,
        )
    adapt_flags = torch.tensor([False, True], device=device).unbind()
    index = optimizer._get_variable_index
    kernel = _kernel.get(config.torch_compile_enabled())
    for variable, p, g in zip(variables, values, grads):
        constants, step, decay, no_decay, max_ratio_t = scalars[p.dtype]
        i = index(variable)
        kernel(
            flat(p),
            flat(g),
            flat(optimizer._momentums[i].value),
            flat(optimizer._velocities[i].value),
            *constants,
            *step,
            decay if optimizer._decays(variable) else no_decay,
            adapt_flags[optimizer._adapts[i]],
            max_ratio_t,
        )
