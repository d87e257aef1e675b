"""Plain-Python references of the schedules, written from the papers
(independent of keras_batchopt's code):

* WSD: Hu et al., "MiniCPM: Unveiling the Potential of Small Language Models
  with Scalable Training Strategies", arXiv 2404.06395 (warmup, stable,
  decay; exponential decay); Hägele et al., "Scaling Laws and
  Compute-Optimal Training Beyond Fixed Training Durations", arXiv
  2405.18392 (the 1-sqrt cooldown).
* Power: Shen et al., "Power Scheduler: A Batch Size and Token Number
  Agnostic Learning Rate Scheduler", arXiv 2408.13359.
* Infinite: Ibrahim et al., "Simple and Scalable Strategies to Continually
  Pre-train Large Language Models", arXiv 2403.08763 (inverse-sqrt
  cooldown); Singh et al., "Beyond Cosine Decay: On the effectiveness of
  Infinite Learning Rate Schedule for Continual Pre-training", arXiv
  2503.02844 (cosine cooldown, annealing).
* Gradual warmup: Goyal et al., "Accurate, Large Minibatch SGD: Training
  ImageNet in 1 Hour", arXiv 1706.02677.

The `pyopt_jump` variant is `get_wsd_schedule` of pytorch-optimizer 4.1.0
(`pytorch_optimizer/lr_scheduler/wsd.py`).
"""

import math


def shape_fraction(shape, p, half_life_fraction=None):
    if shape == "linear":
        return 1 - p
    if shape == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    if shape == "1-sqrt":
        return 1 - math.sqrt(p)
    if shape == "1-square":
        return 1 - p * p
    if shape == "exponential":
        # 0.5 ** (p / h), shifted and rescaled to end at 0.
        raw = 0.5 ** (p / half_life_fraction)
        end = 0.5 ** (1 / half_life_fraction)
        return (raw - end) / (1 - end)
    raise ValueError(shape)


def wsd(s, peak, warmup, stable, decay, shape, floor, half_life=None):
    if s < warmup:
        return peak * s / warmup
    if s < warmup + stable:
        return peak
    if s >= warmup + stable + decay:
        return floor
    p = (s - warmup - stable) / decay
    h = (half_life or decay / 10) / decay
    return floor + (peak - floor) * shape_fraction(shape, p, h)


def power(
    s,
    max_lr,
    a,
    b,
    batch,
    tokens_per_step,
    warmup=0,
    decay=0,
    total=None,
    shape="exponential",
    floor=0.0,
    half_life=None,
):
    def law(step):
        n = step * tokens_per_step
        return max_lr if n == 0 else min(max_lr, batch * a * n**b)

    if s < warmup:
        return s / warmup * law(warmup)
    if decay and s > total - decay:
        p = min((s - (total - decay)) / decay, 1.0)
        h = (half_life or decay / 10) / decay
        start = law(total - decay)
        return floor + (start - floor) * shape_fraction(shape, p, h)
    return law(s)


def infinite(
    s,
    max_lr,
    const,
    warmup,
    cooldown,
    shape="cosine",
    alpha=10.0,
    anneal_at=None,
    anneal_steps=0,
    anneal_shape="exponential",
    floor=0.0,
    half_life=None,
):
    if s < warmup:
        return max_lr * s / warmup
    if anneal_at is not None and s >= anneal_at:
        if s >= anneal_at + anneal_steps:
            return floor
        p = (s - anneal_at) / anneal_steps
        h = (half_life or anneal_steps / 10) / anneal_steps
        return floor + (const - floor) * shape_fraction(anneal_shape, p, h)
    if s < warmup + cooldown:
        p = (s - warmup) / cooldown
        if shape == "cosine":
            g = 0.5 * (1 + math.cos(math.pi * p))
        else:
            h_end = 1 / math.sqrt(1 + alpha)
            g = (1 / math.sqrt(1 + alpha * p) - h_end) / (1 - h_end)
        return const + (max_lr - const) * g
    return const


def gradual_warmup(s, main, warmup, start, offset=True):
    if s < warmup:
        target = main(0) if offset else main(warmup)
        return start + (target - start) * s / warmup
    return main(s - warmup) if offset else main(s)


# Plausible porting mistakes; the tests check that each one moves the
# schedule by far more than the tolerance at the steps they sample.
def _wsd_pyopt_jump(s, peak, warmup, stable, decay, shape, floor, **_):
    """pytorch-optimizer: non-cosine shapes decay to 0, then the floor."""
    if warmup + stable <= s < warmup + stable + decay:
        p = (s - warmup - stable) / decay
        return peak * shape_fraction(shape, p, 0.1)
    return wsd(s, peak, warmup, stable, decay, shape, floor)


def _wsd_warmup_off_by_one(s, peak, warmup, stable, decay, shape, floor, **_):
    if s < warmup:
        return peak * (s + 1) / warmup
    return wsd(s, peak, warmup, stable, decay, shape, floor)


def _wsd_raw_exponential(s, peak, warmup, stable, decay, shape, floor, **_):
    """MiniCPM's 0.5^(t/h) clipped at the floor, not rescaled."""
    if s >= warmup + stable and shape == "exponential":
        return max(floor, peak * 0.5 ** ((s - warmup - stable) / (decay / 10)))
    return wsd(s, peak, warmup, stable, decay, shape, floor)


WSD_VARIANTS = {
    "pyopt_jump": _wsd_pyopt_jump,
    "warmup_off_by_one": _wsd_warmup_off_by_one,
    "raw_exponential": _wsd_raw_exponential,
}


def _power_no_batch(s, batch, **kwargs):
    return power(s, batch=1, **kwargs)


def _power_warmup_to_cap(s, max_lr, warmup, **kwargs):
    if s < warmup:
        return max_lr * s / warmup
    return power(s, max_lr=max_lr, warmup=warmup, **kwargs)


POWER_VARIANTS = {
    "no_batch_size": _power_no_batch,
    "warmup_to_cap": _power_warmup_to_cap,
}


def _infinite_unscaled_inv_sqrt(s, max_lr, const, warmup, cooldown, **kw):
    if warmup <= s < warmup + cooldown:
        p = (s - warmup) / cooldown
        return const + (max_lr - const) / (1 + kw.get("alpha", 10.0) * p) ** 0.5
    return infinite(s, max_lr, const, warmup, cooldown, **kw)


INFINITE_VARIANTS = {"unscaled_inv_sqrt": _infinite_unscaled_inv_sqrt}
