"""Hessian-vector products on PyTorch: double backward."""

import warnings

import keras
import torch
from keras import tree

from keras_batchopt.src.curvature.loss_scale import hessian_optimizer
from keras_batchopt.src.curvature.loss_scale import skip_step_on_overflow
from keras_batchopt.src.curvature.model_loss import model_loss


def rademacher_probes(variables, seed, step):
    """One Rademacher tensor per variable, a function of (seed, step).

    The signs of the variables on one device are the bits of one draw of
    32-bit words, split over them in order: one random number per 32
    entries instead of one per entry (the CPU generator draws them one by
    one)."""
    step = int(keras.ops.convert_to_numpy(step))
    values = [v.value for v in variables]
    by_device = {}
    for i, value in enumerate(values):
        by_device.setdefault(value.device, []).append(i)
    out = [None] * len(values)
    for device, indices in by_device.items():
        generator = torch.Generator(device=device)
        generator.manual_seed((seed * 1_000_003 + step) % 2**63)
        sizes = [values[i].numel() for i in indices]
        total = sum(sizes)
        words = torch.randint(
            0,
            2**32,
            (-(-total // 32),),
            generator=generator,
            device=device,
            dtype=torch.int64,
        )
        shifts = torch.arange(32, device=device)
        bits = (words[:, None] >> shifts).bitwise_and_(1).view(-1)[:total]
        signs = bits.to(torch.float32).mul_(2).sub_(1)
        for i, part in zip(indices, signs.split(sizes)):
            out[i] = part.view(values[i].shape).to(values[i].dtype)
    return out


def _hvp(grads, params, vectors):
    """`H v` from gradients built with `create_graph=True`; a gradient that
    does not depend on any parameter (a loss linear in it) gives zeros."""
    pairs = [(g, v) for g, v in zip(grads, vectors) if g.requires_grad]
    hvps = [None] * len(params)
    if pairs:
        hvps = torch.autograd.grad(
            [g for g, _ in pairs],
            params,
            grad_outputs=[v for _, v in pairs],
            allow_unused=True,
        )
    return [
        torch.zeros_like(p) if h is None else h for h, p in zip(hvps, params)
    ]


def make_hessian_vector_product(model):
    """`hvp(x, y, sample_weight, vectors) -> (loss, hvps)` at the model's
    current weights, in inference mode."""

    def hvp(x, y, sample_weight, vectors):
        params = [v.value for v in model.trainable_variables]
        vectors = [
            torch.as_tensor(keras.ops.convert_to_numpy(v)).to(p.device)
            for v, p in zip(vectors, params)
        ]
        with torch.enable_grad():
            loss, _ = model_loss(model, x, y, sample_weight, training=False)
            grads = torch.autograd.grad(
                loss, params, create_graph=True, allow_unused=True
            )
            grads = [
                torch.zeros_like(p) if g is None else g
                for g, p in zip(grads, params)
            ]
            hvps = _hvp(grads, params, vectors)
        return loss.detach(), [h.detach() for h in hvps]

    return hvp


def train_step(model, data):
    """Keras's torch `train_step`, plus one Hessian-vector product per step
    handed to the model's Hessian optimizer."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    optimizer = model.optimizer
    inner = hessian_optimizer(optimizer)
    model.zero_grad()
    loss, y_pred = model_loss(model, x, y, sample_weight, training=True)
    model._loss_tracker.update_state(
        loss,
        sample_weight=next(i for i in tree.flatten(x) if i is not None).shape[
            0
        ],
    )
    loss = optimizer.scale_loss(loss)
    variables = model.trainable_weights[:]
    if not variables:
        warnings.warn("The model does not have any trainable weights.")
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
    params = [v.value for v in variables]
    refresh = bool(keras.ops.convert_to_numpy(inner.refreshes_hessian()))
    grads = torch.autograd.grad(
        loss, params, create_graph=refresh, allow_unused=True
    )
    grads = [
        torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)
    ]
    if refresh:
        probes = rademacher_probes(variables, inner.seed, inner.iterations)
        scale = float(keras.ops.convert_to_numpy(optimizer.scale_loss(1.0)))
        hvps = [h.detach() for h in _hvp(grads, params, probes)]
        if scale != 1.0:
            hvps = [h / scale for h in hvps]
    else:
        hvps = [torch.zeros_like(p) for p in params]
    grads = [g.detach() for g in grads]
    grads = skip_step_on_overflow(optimizer, grads, hvps)
    with torch.no_grad(), inner.using_hessian(hvps, variables):
        optimizer.apply(grads, variables)
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
