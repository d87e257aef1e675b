"""The adapting inference steps of the test-time normalization layers on
torch, in plain torch operations.

Keras runs torch eagerly, and each `keras.ops` call on a small tensor
(the per-channel statistics, the `(batch, K)` assignment of UnMix-TNS, a
`variable.assign`) costs tens of microseconds of conversions and dtype
rules before its few microseconds of work; the layers' generic steps run
dozens of them, where Keras's BatchNormalization runs a few. These
functions take the same steps with the same arithmetic, in the same order
(the same formulas, so the same results up to float rounding), as plain
torch operations, and write the layers' state in place outside a
stateless scope (as `Variable.assign` does on torch). They are reached
through `keras_batchopt.src.backend.dispatch` (see
`layers.normalization.statistics.fast_module`); the layers fall back to
their generic code where no such module exists or fast paths are off.
"""

import torch
from keras.src.backend.common.stateless_scope import in_stateless_scope

# PyTorch's `F.normalize` divides by max(norm, 1e-12).
NORMALIZE_EPSILON = 1e-12


def assign(variables, values, tensors=None):
    """`variable.assign(value)` for each pair: in place outside a
    stateless scope (the copy Keras's torch `Variable.assign` makes,
    without its conversions), into `tensors`, the variables' `value`s
    where the caller has read them already."""
    if in_stateless_scope():
        for variable, value in zip(variables, values):
            variable.assign(value)
        return
    if tensors is None:
        tensors = [variable.value for variable in variables]
    with torch.no_grad():
        for tensor, value in zip(tensors, values):
            tensor.copy_(value)


def read(variable):
    """A weight's tensor, or None for a missing weight."""
    return None if variable is None else variable.value


def all_finite(a, b):
    """A boolean scalar tensor: every value of `a` and `b` (of one shape)
    is finite. `v * 0` is 0 for a finite `v` and NaN for an infinite or
    NaN one; no host synchronization."""
    return ((a * 0.0 + b * 0.0) == 0.0).all()


def moments(x, axes):
    """Keras's torch `ops.moments(x, axes, keepdims=True)`: the mean and
    `E[x^2] - mean^2`."""
    mean = torch.mean(x, dim=axes, keepdim=True)
    square = torch.mean(torch.square(x), dim=axes, keepdim=True)
    return mean, square - torch.square(mean)


def batch_moments(x, axis):
    """The per-channel mean and biased variance over every axis but
    `axis`, 1-D, and the number of values each is over (an int)."""
    axes = [i for i in range(x.ndim) if i != axis]
    mean, variance = moments(x, axes)
    count = x.numel() // x.shape[axis] if x.shape[axis] else 0
    return mean.reshape(-1), variance.reshape(-1), count


def unbiased(variance, count):
    """`statistics.unbiased` with an int count: `n / max(n - 1, 1)`."""
    return variance * count / max(count - 1, 1)


def batch_normalize(x, mean, variance, gamma, beta, epsilon, axis):
    """Keras's torch `ops.batch_normalization` (the same operations) with
    `gamma` and `beta` tensors or None."""
    shape = [1] * x.ndim
    shape[axis] = mean.shape[0]
    scale = variance.reshape(shape).add(epsilon).rsqrt_()
    if gamma is not None:
        scale = scale.mul(gamma.to(x.dtype).reshape(shape))
    outputs = x.subtract(mean.reshape(shape)).mul_(scale)
    if beta is not None:
        outputs = outputs.add_(beta.to(x.dtype).reshape(shape))
    return outputs


def alpha_statistics(x, axis, moving_mean, moving_variance, alpha):
    """alpha-BN's mixed statistics of the batch `x` (no mask), 1-D in
    `x`'s dtype, from the moving statistics in `x`'s dtype:
    `AlphaBatchNormalization._mixed_statistics`."""
    mean, variance, count = batch_moments(x, axis)
    if count < 2:
        return moving_mean, moving_variance
    variance = unbiased(variance, count)
    weight = torch.tensor(alpha, dtype=x.dtype, device=x.device)
    keep = 1 - weight
    usable = all_finite(mean, variance)
    return (
        torch.where(usable, keep * moving_mean + weight * mean, moving_mean),
        torch.where(
            usable, keep * moving_variance + weight * variance, moving_variance
        ),
    )


def alpha_inference(layer, x, axis):
    """An inference step of `AlphaBatchNormalization` with `alpha > 0` on
    the batch `x` (no mask): the output, in `x`'s dtype."""
    mean, variance = alpha_statistics(
        x,
        axis,
        layer.moving_mean.value.to(x.dtype),
        layer.moving_variance.value.to(x.dtype),
        layer.alpha,
    )
    return batch_normalize(
        x,
        mean,
        variance,
        read(layer.gamma),
        read(layer.beta),
        layer.epsilon,
        axis,
    )


def momentum_decay_inference(layer, x, axis):
    """An inference step of `MomentumDecayBatchNormalization` on the batch
    `x` (no mask): the state updated as its `_adapt`, and the output (in
    `x`'s dtype) normalized as its `call`."""
    mean, variance, count = batch_moments(x, axis)
    # (moving_mean, moving_variance[, gamma][, beta]) and their sources.
    sources, currents = zip(*layer._pairs())
    source_values = [v.value for v in sources]
    current_values = [v.value for v in currents]
    counters = (layer.adaptation_momentum, layer.adapted_batches)
    momentum, batches = [v.value for v in counters]
    adapting = layer._adapting.value > 0
    if count < 2:
        adapting = torch.zeros_like(adapting)
    else:
        adapting = adapting & all_finite(mean, variance)
    first = adapting & (batches == 0)
    decayed = momentum * layer.decay_factor
    weight = decayed + layer.min_momentum
    keep = 1.0 - weight
    moving = [
        # Not adapting: the old value (the generic code also zeroes the
        # batch statistics first, which selects the same).
        torch.where(adapting, keep * old + weight * value.to(old.dtype), old)
        for old, value in zip(
            current_values[:2], (mean, unbiased(variance, count))
        )
    ]
    # The snapshot of the sources reads the weights before the update.
    assign(
        sources + currents[:2] + counters,
        [
            torch.where(first, current, source)
            for source, current in zip(source_values, current_values)
        ]
        + moving
        + [
            torch.where(adapting, decayed, momentum),
            batches + adapting.to(batches.dtype),
        ],
        source_values + current_values[:2] + [momentum, batches],
    )
    if layer.normalize_with == "moving":
        mean, variance = moving
    else:
        mean = torch.where(adapting, mean, moving[0])
        variance = torch.where(adapting, variance, moving[1])
    return batch_normalize(
        x,
        mean.to(x.dtype),
        variance.to(x.dtype),
        read(layer.gamma),
        read(layer.beta),
        layer.epsilon,
        axis,
    )


def _unit_rows(x):
    norm = torch.sqrt(torch.sum(torch.square(x), dim=1, keepdim=True))
    return x / torch.clamp_min(norm, NORMALIZE_EPSILON)


def _components(layer, dtype):
    """The components to use (the initial ones before the first batch),
    as `UnMixTestTimeNormalization._components`."""
    k = layer.num_components
    spread = 0.0 if k == 1 else layer.spread
    mean = layer.moving_mean.value
    variance = layer.moving_variance.value
    initial_means = mean[None].expand(k, mean.shape[0])
    if k > 1:
        width = (spread * k / (k - 1)) ** 0.5
        noise = layer.component_noise.value
        initial_means = (
            initial_means + width * torch.sqrt(variance)[None] * noise
        )
    initial_variances = ((1.0 - spread) * variance[None]).expand(
        initial_means.shape
    )
    started = layer.components_started.value > 0
    means = torch.where(started, layer.component_means.value, initial_means)
    variances = torch.where(
        started, layer.component_variances.value, initial_variances
    )
    return means.to(dtype), variances.to(dtype)


def _mixture(probs, inst_mean, inst_var, means, variances):
    """`unmix_test_time_normalization.mixed_statistics`."""
    p = probs[:, :, None]
    keep = 1.0 - p
    mean_mat = keep * means[None] + p * inst_mean[:, None]
    var_mat = keep * variances[None] + p * inst_var[:, None]
    k = means.shape[0]
    pooled = torch.sum(mean_mat, dim=1, keepdim=True) / k
    spread = var_mat + torch.square(mean_mat - pooled)
    return pooled[:, 0], torch.sum(spread, dim=1) / k


def _update(layer, x, probs, inst_mean, inst_var, means, variances):
    """The components' online update, as `UnMixTestTimeNormalization.
    _update`."""
    if layer.test_batch_size is not None:
        power = layer.test_batch_size / layer.max_batch_size
        rate = 1.0 - layer.adaptation_momentum**power
    else:
        size = torch.tensor(x.shape[0], dtype=x.dtype, device=x.device)
        keep = torch.tensor(
            layer.adaptation_momentum, dtype=x.dtype, device=x.device
        )
        rate = 1.0 - torch.pow(keep, size / layer.max_batch_size)
    p = probs[:, :, None]
    step_mean = torch.mean(p * (inst_mean[:, None] - means[None]), dim=0)
    step_var = torch.mean(p * (inst_var[:, None] - variances[None]), dim=0)
    finite = all_finite(inst_mean, inst_var)
    new_means = torch.where(finite, means + rate * step_mean, means)
    new_variances = torch.where(finite, variances + rate * step_var, variances)
    assign(
        (
            layer.component_means,
            layer.component_variances,
            layer.components_started,
        ),
        (
            new_means.to(torch.float32),
            new_variances.to(torch.float32),
            torch.ones_like(layer.components_started.value),
        ),
    )


def unmix_inference(layer, x, axis):
    """An inference step of `UnMixTestTimeNormalization` on `x` of rank
    >= 3: the output (in `x`'s dtype), the components updated."""
    channels = x.shape[axis]
    axes = [i for i in range(1, x.ndim) if i != axis]
    inst_mean, inst_var = moments(x, axes)
    inst_mean = inst_mean.reshape(-1, channels)
    inst_var = inst_var.reshape(-1, channels)
    means, variances = _components(layer, x.dtype)
    if layer.num_components == 1:
        probs = torch.ones_like(inst_mean[:, :1])
    else:
        similarity = torch.matmul(
            _unit_rows(inst_mean.detach()), _unit_rows(means).T
        )
        probs = torch.softmax(similarity / layer.temperature, dim=1)
    mean, variance = _mixture(probs, inst_mean, inst_var, means, variances)
    _update(
        layer,
        x,
        probs,
        inst_mean.detach(),
        inst_var.detach(),
        means,
        variances,
    )
    shape = [1] * x.ndim
    shape[0] = -1
    shape[axis] = channels
    scale = torch.rsqrt(variance + layer.epsilon)
    if layer.gamma is not None:
        scale = scale * layer.gamma.value.to(x.dtype)
    # In place on the fresh difference, as Keras's `batch_normalization`.
    outputs = x.subtract(mean.reshape(shape)).mul_(scale.reshape(shape))
    if layer.beta is not None:
        outputs = outputs.add_(layer.beta.value.to(x.dtype).reshape(shape[1:]))
    return outputs
