"""AdaHessian on the torch backend: one in-place kernel per variable.

The generic `AdaHessian.update_step` runs about twenty `keras.ops` calls
per variable, each a pass over memory with a fresh temporary, and Keras's
torch `assign_add`/`assign_sub` add a copy each. Here every variable is
updated by one kernel that reads `w, g, |Hz|, m, v` and writes `w, m, v`
in place, with the generic code's operations in the generic code's order
(so both give the same numbers). The kernel is compiled by `torch.compile`
like the other torch fast paths (see `compile_utils.compile_now`) and runs
eagerly otherwise. The block averaging of `|Hz|` over a convolution
kernel's spatial axes (`hessian_averaging`) stays outside the kernel: it
is a reduction over a small tensor.
"""

import torch
from keras import ops

from keras_batchopt.src.backend.torch import compile_utils
from keras_batchopt.src.backend.torch.compile_utils import flat
from keras_batchopt.src.ops import hessian_averaging as averaging
from keras_batchopt.src.ops.bias_correction import bias_correction


def _ada_hessian_kernel(
    p,
    g,
    d,
    m,
    v,
    *,
    refresh,
    lr,
    correction_1,
    sqrt_correction_2,
    beta_2,
    one_minus_beta_1,
    one_minus_beta_2,
    epsilon,
    weight_decay,
    hessian_power,
):
    # `d` is `|Hz|` or its block average (non-negative: `abs` leaves it).
    # Every float is a 0-d tensor and every tensor is 1-D, so one compiled
    # graph serves all variables and steps; `weight_decay` is 0 for a
    # variable that is not decayed and `hessian_power` 1 by default (both
    # exact no-ops then).
    d = d.abs()
    m.add_((g - m) * one_minus_beta_1)
    v.copy_(torch.where(refresh, v * beta_2 + d * d * one_minus_beta_2, v))
    denom = v.sqrt() / sqrt_correction_2
    denom = torch.where(hessian_power == 1, denom, denom.pow(hessian_power))
    denom = denom + epsilon
    step = (m / correction_1) / denom
    step = step + p * weight_decay
    p.sub_(lr * step)


def _eager_kernel(p, g, d, m, v, **s):
    """The kernel's operations without the compiled kernel's branch-free
    `where`s (which cost a pass each when not fused), in place."""
    d = d.abs()
    m.add_((g - m).mul_(s["one_minus_beta_1"]))
    if s["refresh_host"]:
        v.mul_(s["beta_2"]).add_(d.mul_(d).mul_(s["one_minus_beta_2"]))
    denom = v.sqrt().div_(s["sqrt_correction_2"])
    if s["hessian_power_host"] != 1.0:
        denom.pow_(s["hessian_power"])
    denom.add_(s["epsilon"])
    step = torch.div(m, s["correction_1"]).div_(denom)
    if s["decays"]:
        step.add_(p * s["weight_decay"])
    p.sub_(step.mul_(s["lr"]))


_kernel = compile_utils.CompiledKernel(_ada_hessian_kernel, "AdaHessian")


def can_use(optimizer, grads, variables):
    """In place, outside a stateless scope, without gradient accumulation
    (whose averaged `|Hz|` the generic path handles), with a product for
    every variable (else the generic path raises its clear error)."""
    pending = optimizer._pending_hessian
    if optimizer.gradient_accumulation_steps or pending is None:
        return False
    if any(optimizer._get_variable_index(v) not in pending for v in variables):
        return False
    return compile_utils.can_use(optimizer, grads, variables)


def _scalars(optimizer, learning_rate, dtype, device, refresh):
    """The step's 0-d tensors for one dtype, computed as the generic
    `update_step` computes them."""
    t = optimizer.iterations + 1
    refreshes = torch.floor_divide(
        optimizer.iterations.value, optimizer.hessian_update_interval
    )
    constants = {
        "beta_2": optimizer.beta_2,
        "one_minus_beta_1": 1 - optimizer.beta_1,
        "one_minus_beta_2": 1 - optimizer.beta_2,
        "epsilon": optimizer.epsilon,
        "hessian_power": optimizer.hessian_power,
    }
    tensors = compile_utils.scalars(list(constants.values()), dtype, device)
    named = dict(zip(constants, tensors))
    named["refresh"] = refresh
    named["lr"] = ops.cast(learning_rate, dtype)
    named["correction_1"] = bias_correction(optimizer.beta_1, t, dtype)
    named["sqrt_correction_2"] = torch.sqrt(
        bias_correction(optimizer.beta_2, refreshes + 1, dtype)
    )
    decays = compile_utils.scalars(
        [optimizer.weight_decay or 0.0, 0.0], dtype, device
    )
    return named, decays


def _averaged_hessian(optimizer, i, hz, dtype):
    """`|Hz|` of variable `i`, block averaged where the optimizer averages
    (contiguous), or `Hz` itself where it does not (the kernel takes the
    absolute value)."""
    hz = torch.as_tensor(hz).to(dtype)
    axes = optimizer._averaging_axes[i]
    if axes is None:
        return hz.contiguous()
    return averaging.average_blocks(hz.abs(), axes).contiguous()


@compile_utils.eager_timed
@torch.no_grad()
def update_step(optimizer, grads, variables, learning_rate):
    values = [v.value for v in variables]
    device = values[0].device
    refresh = optimizer.refreshes_hessian()
    use_compile = compile_utils.compile_now(optimizer)
    kernel = _kernel.get(use_compile)
    scalars = {
        dtype: _scalars(optimizer, learning_rate, dtype, device, refresh)
        for dtype in {p.dtype for p in values}
    }
    if not use_compile:
        host = {
            "refresh_host": bool(refresh),
            "hessian_power_host": optimizer.hessian_power,
        }
    index = optimizer._get_variable_index
    for variable, p, g in zip(variables, values, grads):
        i = index(variable)
        named, (decay, no_decay) = scalars[p.dtype]
        d = _averaged_hessian(
            optimizer, i, optimizer._pending_hessian[i], p.dtype
        )
        decays = optimizer._decays(variable)
        named = {**named, "weight_decay": decay if decays else no_decay}
        tensors = (
            flat(p),
            flat(g),
            flat(d),
            flat(optimizer._momentums[i].value),
            flat(optimizer._hessian_averages[i].value),
        )
        if use_compile:
            kernel(*tensors, **named)
        else:
            _eager_kernel(*tensors, **named, **host, decays=decays)
