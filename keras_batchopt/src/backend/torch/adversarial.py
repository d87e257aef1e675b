"""Input gradients at given weights on PyTorch (ConAdv)."""

import keras
import torch
from keras import tree

from keras_batchopt.src.curvature.model_loss import model_loss


def input_gradients(model, x, y, sample_weight, values):
    """`grad_x L(values; x, y)` in training mode; the layer state the
    forward pass would change is discarded."""
    inputs = [t.detach().requires_grad_(True) for t in tree.flatten(x)]
    mapping = list(zip(model.trainable_variables, [v.detach() for v in values]))
    with torch.enable_grad(), keras.StatelessScope(state_mapping=mapping):
        loss, _ = model_loss(
            model,
            tree.pack_sequence_as(x, inputs),
            y,
            sample_weight,
            training=True,
        )
        grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    grads = [
        torch.zeros_like(t) if g is None else g.detach()
        for g, t in zip(grads, inputs)
    ]
    return tree.pack_sequence_as(x, grads)
