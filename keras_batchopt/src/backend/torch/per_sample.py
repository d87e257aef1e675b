"""Per-sample gradients on torch: ``torch.func.vmap(torch.func.grad)``."""

import contextlib

import torch


@contextlib.contextmanager
def _no_channels_last_copies():
    """Keras >= 3.1x's torch convolutions copy inputs and kernels to the
    channels-last memory format, a layout-only optimization that
    `torch.func.vmap` cannot batch (`Tensor.clone(memory_format)` is not
    implemented there). Skip it while the per-sample gradients run; the
    values are the same."""
    try:
        from keras.src.backend.torch import nn as torch_nn
    except ImportError:  # pragma: no cover
        yield
        return
    original = getattr(torch_nn, "_maybe_convert_to_channels_last", None)
    if original is None:
        yield
        return
    torch_nn._maybe_convert_to_channels_last = lambda tensor: tensor
    try:
        yield
    finally:
        torch_nn._maybe_convert_to_channels_last = original


def compile_statistics(sample_loss, statistics):
    """``f(trainable, non_trainable, x, y) -> statistics(per-sample grads)``.

    ``sample_loss(trainable, non_trainable, x_i, y_i)`` is one sample's loss.
    Runs eagerly: functorch's transforms batch the whole model at once.
    """
    per_sample = torch.func.vmap(
        torch.func.grad(sample_loss), in_dims=(None, None, 0, 0)
    )

    def run(trainable, non_trainable, x, y):
        trainable = [t.detach() for t in trainable]
        non_trainable = [t.detach() for t in non_trainable]
        with _no_channels_last_copies():
            gradients = per_sample(trainable, non_trainable, x, y)
        return statistics(gradients)

    return run
