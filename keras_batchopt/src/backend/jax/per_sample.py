"""Per-sample gradients on JAX: ``jit(vmap(grad))``."""

import jax


def compile_statistics(sample_loss, statistics):
    """``f(trainable, non_trainable, x, y) -> statistics(per-sample grads)``.

    ``sample_loss(trainable, non_trainable, x_i, y_i)`` is one sample's loss.
    """
    per_sample = jax.vmap(jax.grad(sample_loss), in_axes=(None, None, 0, 0))

    @jax.jit
    def run(trainable, non_trainable, x, y):
        return statistics(per_sample(trainable, non_trainable, x, y))

    return run
