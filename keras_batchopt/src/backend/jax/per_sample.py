"""Per-sample gradients on JAX: ``jit(vmap(grad))``."""

import jax


def compile_statistics(sample_loss, statistics):
    """``f(wrt, constants, x, y) -> statistics(gradients, aux)``.

    ``sample_loss(wrt, constants, x_i, y_i)`` gives one sample's loss and
    an auxiliary output; ``gradients`` are its per-sample gradients with
    respect to the list ``wrt``, ``aux`` the auxiliary outputs, batched.
    """
    per_sample = jax.vmap(
        jax.grad(sample_loss, has_aux=True), in_axes=(None, None, 0, 0)
    )

    @jax.jit
    def run(wrt, constants, x, y):
        return statistics(*per_sample(wrt, constants, x, y))

    return run
