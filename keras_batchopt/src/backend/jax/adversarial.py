"""The ConAdv training step on JAX: stale weights in the metric state."""

import jax
import jax.numpy as jnp
import keras

from keras_batchopt.src.strategies.concurrent_adversarial import float_inputs


def train_step(model, base, conadv, state, data):
    """Keras's JAX step on the clean and adversarial batch; the stale
    weights are metric variables, read from and written to `state`."""
    trainable, non_trainable, optimizer_values, metrics = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x = float_inputs(x)
    position = {id(v): i for i, v in enumerate(model.metrics_variables)}
    stale = [position[id(v)] for v in conadv.stale.values]
    filled = position[id(conadv.stale.filled)]
    values = [
        jnp.where(metrics[filled] > 0, metrics[i], t)
        for i, t in zip(stale, trainable)
    ]

    def loss_of_inputs(inputs):
        loss, _ = model.compute_loss_and_updates(
            values,
            non_trainable,
            metrics,
            inputs,
            y,
            sample_weight,
            training=True,
            optimizer_variables=optimizer_values,
        )
        # (Scaled by a loss-scaling optimizer: its sign is what counts.)
        return loss

    x_adv = conadv.perturb(x, jax.grad(loss_of_inputs)(x))
    metrics = list(metrics)
    for i, t in zip(stale, trainable):
        metrics[i] = t
    metrics[filled] = jnp.ones_like(metrics[filled])
    state = (trainable, non_trainable, optimizer_values, metrics)
    return base(state, conadv.combine(x, x_adv, y, sample_weight))
