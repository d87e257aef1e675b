"""Per-sample gradients on torch: ``torch.func.vmap(torch.func.grad)``."""

import contextlib

import keras
import torch


def _one_hot(x, num_classes, axis=-1, dtype=None, sparse=False):
    """`keras.ops.one_hot` by comparison, which vmap can batch."""
    if sparse:
        raise ValueError("Unsupported value `sparse=True` with torch backend")
    from keras.src.backend.torch.core import convert_to_tensor
    from keras.src.backend.torch.core import to_torch_dtype

    x = convert_to_tensor(x, dtype=torch.long)
    classes = torch.arange(num_classes, device=x.device)
    output = (x.unsqueeze(-1) == classes).to(to_torch_dtype(dtype or "float32"))
    if axis != -1 and axis != output.dim() - 1:
        output = torch.movedim(output, -1, axis)
    return output


# Keras-private torch functions that `torch.func.vmap` cannot batch, and
# value-identical stand-ins used while the per-sample gradients run:
# - Keras >= 3.10's convolutions copy inputs and kernels to the
#   channels-last memory format (a layout optimization;
#   `Tensor.clone(memory_format)` is not implemented under vmap);
# - Keras 3.8's `one_hot` (used by the sparse cross-entropies) calls
#   `torch.nn.functional.one_hot`, which reads a tensor's value.
_VMAP_STAND_INS = {
    "_maybe_convert_to_channels_last": lambda tensor: tensor,
    "one_hot": _one_hot,
}


@contextlib.contextmanager
def _vmap_safe_keras():
    from keras.src.backend.torch import nn as torch_nn

    originals = {
        name: getattr(torch_nn, name)
        for name in _VMAP_STAND_INS
        if hasattr(torch_nn, name)
    }
    for name in originals:
        setattr(torch_nn, name, _VMAP_STAND_INS[name])
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torch_nn, name, original)


def compile_statistics(sample_loss, statistics):
    """``f(wrt, constants, x, y) -> statistics(gradients, aux)``.

    ``sample_loss(wrt, constants, x_i, y_i)`` gives one sample's loss and
    an auxiliary output; ``gradients`` are its per-sample gradients with
    respect to the list ``wrt``, ``aux`` the auxiliary outputs, batched.
    Runs eagerly: functorch's transforms batch the whole model at once.
    """
    per_sample = torch.func.vmap(
        torch.func.grad(sample_loss, has_aux=True), in_dims=(None, None, 0, 0)
    )

    def run(wrt, constants, x, y):
        detach = lambda t: t.detach()  # noqa: E731
        wrt = [t.detach() for t in wrt]
        constants = keras.tree.map_structure(detach, constants)
        with _vmap_safe_keras():
            gradients, aux = per_sample(wrt, constants, x, y)
        return statistics(gradients, aux)

    return run
