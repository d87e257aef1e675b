"""Per-sample gradients on torch: ``torch.func.vmap(torch.func.grad)``."""

import torch


def compile_statistics(sample_loss, statistics):
    """``f(trainable, non_trainable, x, y) -> statistics(per-sample grads)``.

    ``sample_loss(trainable, non_trainable, x_i, y_i)`` is one sample's loss.
    Runs eagerly: functorch's transforms batch the whole model at once.
    """
    per_sample = torch.func.vmap(
        torch.func.grad(sample_loss), in_dims=(None, None, 0, 0)
    )

    def run(trainable, non_trainable, x, y):
        with torch.no_grad():
            trainable = [t.detach() for t in trainable]
            non_trainable = [t.detach() for t in non_trainable]
        return statistics(per_sample(trainable, non_trainable, x, y))

    return run
