"""A custom vector-Jacobian product and a concrete variable read, on
PyTorch."""

import torch


class _Function(torch.autograd.Function):
    @staticmethod
    def forward(ctx, forward, backward, *inputs):
        output, residuals = forward(*inputs)
        ctx.residuals = residuals
        ctx.backward_fn = backward
        return output

    @staticmethod
    def backward(ctx, d_output):
        grads = ctx.backward_fn(ctx.residuals, d_output)
        del ctx.residuals
        return (None, None) + tuple(grads)


def custom_vjp(forward, backward):
    """`f(*inputs)` whose value is `forward(*inputs)[0]` and whose
    cotangents are `backward(residuals, d_output)`, one per input (None for
    an input that gets none)."""

    def f(*inputs):
        return _Function.apply(forward, backward, *inputs)

    return f


def concrete_value(variable):
    """The value of a Keras variable as NumPy."""
    return variable.value.detach().cpu().numpy()
