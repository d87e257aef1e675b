"""Hessian-vector products on JAX: forward-over-reverse (`jvp` of `grad`).

Both the curvature toolkit and AdaHessian's training step differentiate
Keras's own stateless `compute_loss_and_updates`, so regularization losses
and the compiled loss are those of `fit`.
"""

import math

import jax
import jax.numpy as jnp
import keras
from keras import tree

from keras_batchopt.src.curvature.loss_scale import hessian_optimizer
from keras_batchopt.src.curvature.loss_scale import skip_step_on_overflow


def rademacher_probes(variables, seed, step):
    """One Rademacher tensor per variable, a function of (seed, step).

    The signs are the bits of one draw of 32-bit words, split over the
    variables in order: one random number per 32 entries instead of one
    per entry (threefry on the CPU costs more than the rest of a small
    model's step)."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), step)
    sizes = [math.prod(v.shape) for v in variables]
    total = sum(sizes)
    words = jax.random.bits(key, (-(-total // 32),), jnp.uint32)
    bits = (words[:, None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
    signs = 2 * bits.reshape(-1)[:total].astype(jnp.float32) - 1
    out, offset = [], 0
    for v, size in zip(variables, sizes):
        part = signs[offset : offset + size].reshape(tuple(v.shape))
        out.append(part.astype(v.dtype))
        offset += size
    return out


def _values(variables):
    return [v.value for v in variables]


def make_hessian_vector_product(model):
    """`hvp(x, y, sample_weight, vectors) -> (loss, hvps)` at the model's
    current weights, in inference mode."""

    def loss_fn(trainable, non_trainable, metrics, x, y, sample_weight):
        loss, _ = model.compute_loss_and_updates(
            trainable,
            non_trainable,
            metrics,
            x,
            y,
            sample_weight,
            training=False,
        )
        return loss

    @jax.jit
    def run(trainable, non_trainable, metrics, x, y, sample_weight, vectors):
        def grads(t):
            return jax.grad(loss_fn)(
                t, non_trainable, metrics, x, y, sample_weight
            )

        loss = loss_fn(trainable, non_trainable, metrics, x, y, sample_weight)
        _, hvps = jax.jvp(grads, (trainable,), (vectors,))
        return loss, hvps

    def hvp(x, y, sample_weight, vectors):
        return run(
            _values(model.trainable_variables),
            _values(model.non_trainable_variables),
            _values(model.metrics_variables),
            x,
            y,
            sample_weight,
            [jnp.asarray(v) for v in vectors],
        )

    return hvp


def _update_metrics(model, metrics_variables, loss, x, y, y_pred, weight):
    """Keras's metric update of a JAX training step (3.8 and later)."""
    mapping = list(zip(model.metrics_variables, metrics_variables))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        model._loss_tracker.update_state(
            loss,
            sample_weight=next(
                i for i in tree.flatten(x) if i is not None
            ).shape[0],
        )
        logs = model.compute_metrics(x, y, y_pred, weight)
    new_values = []
    for variable in model.metrics_variables:
        value = scope.get_current_value(variable)
        new_values.append(variable.value if value is None else value)
    return logs, new_values


def train_step(model, state, data):
    """Keras's JAX `train_step`, plus one Hessian-vector product per step
    handed to the model's Hessian optimizer."""
    trainable, non_trainable, optimizer_values, metrics = state
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    optimizer = model.optimizer
    inner = hessian_optimizer(optimizer)
    mapping = list(zip(optimizer.variables, optimizer_values))
    with keras.StatelessScope(state_mapping=mapping):
        refresh = inner.refreshes_hessian()
        step = keras.ops.convert_to_tensor(inner.iterations)
        loss_scale = optimizer.scale_loss(1.0)
    probes = rademacher_probes(model.trainable_variables, inner.seed, step)

    def gradients(t):
        (_, aux), grads = jax.value_and_grad(
            model.compute_loss_and_updates, has_aux=True
        )(
            t,
            non_trainable,
            metrics,
            x,
            y,
            sample_weight,
            training=True,
            optimizer_variables=optimizer_values,
        )
        return grads, aux

    def with_hvp():
        return jax.jvp(gradients, (trainable,), (probes,), has_aux=True)

    def without_hvp():
        grads, aux = gradients(trainable)
        return grads, [jnp.zeros_like(g) for g in grads], aux

    # XLA's CPU backend runs convolutions inside a conditional far slower
    # than outside, so on the CPU the product is computed every step and
    # ignored on the others.
    skip = inner.hessian_update_interval > 1 and jax.default_backend() != "cpu"
    if not skip:
        grads, hvps, aux = with_hvp()
    else:
        grads, hvps, aux = jax.lax.cond(refresh, with_hvp, without_hvp)
    hvps = [h / loss_scale for h in hvps]
    grads = skip_step_on_overflow(optimizer, grads, hvps)
    unscaled_loss, y_pred, non_trainable, metrics = aux
    with inner.using_hessian(hvps, model.trainable_variables):
        trainable, optimizer_values = optimizer.stateless_apply(
            optimizer_values, grads, trainable
        )
    logs, metrics = _update_metrics(
        model, metrics, unscaled_loss, x, y, y_pred, sample_weight
    )
    state = (trainable, non_trainable, optimizer_values, metrics)
    enforce = getattr(model, "_enforce_jax_state_sharding", None)
    if enforce is not None:
        state = enforce(*state)
    return logs, state
