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

from keras_batchopt.src import config
from keras_batchopt.src.backend.torch import compile_utils
from keras_batchopt.src.backend.torch.compile_utils import flat
from keras_batchopt.src.optimizers.sgd_sai import gradient_snr


def _momentum_kernel(p, g, buf, lr, gsnr, momentum, dampening, decay, first):
    """The generic step's operations, in its order, in place."""
    averaged = buf * momentum + g * dampening
    buf.copy_(torch.where(first, g, averaged))
    step = buf * (lr * gsnr)
    p.copy_(p * decay - step)


def _plain_kernel(p, g, lr, gsnr, decay):
    p.copy_(p * decay - g * (lr * gsnr))


@functools.cache
def _kernel(with_momentum):
    fn = _momentum_kernel if with_momentum else _plain_kernel
    return compile_utils.CompiledKernel(fn, "SGDSaI")


can_use = compile_utils.can_use


@torch.no_grad()
def update_step(optimizer, grads, variables, learning_rate):
    index = optimizer._get_variable_index
    slots = [optimizer._gsnrs[index(v)].value for v in variables]
    # One host read for every variable's "first gradient?" flag.
    unset = (torch.stack(slots) < 0).tolist()
    for variable, g, slot, first in zip(variables, grads, slots, unset):
        if first:
            size = math.prod(variable.shape)
            slot.copy_(gradient_snr(g, optimizer.epsilon, size))
    kernel = _kernel(bool(optimizer.momentum)).get(
        config.torch_compile_enabled()
    )
    per_dtype = {}
    for variable, g, slot, first in zip(variables, grads, slots, unset):
        p = variable.value
        dtype = p.dtype
        if dtype not in per_dtype:
            lr = ops.cast(learning_rate, dtype).detach().clone()
            decay = 1.0 - lr * optimizer.weight_decay
            per_dtype[dtype] = (
                lr,
                decay,
                *compile_utils.scalars(
                    [optimizer.momentum, 1.0 - optimizer.momentum, 1.0],
                    dtype,
                    p.device,
                ),
            )
        lr, decay, momentum, dampening, one = per_dtype[dtype]
        factor = decay if optimizer._decays(variable) else one
        gsnr = slot.to(dtype)
        if optimizer.momentum:
            buf = flat(optimizer._momentums[index(variable)].value)
            flag = torch.tensor(first, device=p.device)
            kernel(
                flat(p),
                flat(g),
                buf,
                lr,
                gsnr,
                momentum,
                dampening,
                factor,
                flag,
            )
        else:
            kernel(flat(p), flat(g), lr, gsnr, factor)
