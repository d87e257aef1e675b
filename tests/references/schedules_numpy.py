"""Plain-Python references of the schedules, written from algorithms.md B1-B4
and the cited papers (independent of keras_batchopt's code)."""

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
