"""NumPy reference for Normalize-and-Project around Keras's Adam and SGD.

Written from the paper (Lyle et al. 2024, arXiv 2407.01800, NaP: after each
optimizer step, rescale each layer's weights to their initial norm; no
official code was published) and Keras's documented update rules:

- Adam (`keras.optimizers.Adam`): `m += (g - m)(1 - b1)`,
  `v += (g^2 - v)(1 - b2)`, `w -= lr sqrt(1 - b2^t) / (1 - b1^t) * m /
  (sqrt(v) + eps)`;
- SGD with momentum: `u = momentum u - lr g`, `w += u`.

Projection: each group (a kernel alone; a normalization layer's scale and
offset together) is multiplied by `initial norm / current norm`, the
norms being Frobenius norms of the whole group. Float64 throughout. The
`variant` switches exist only to prove the tests sensitive: each is a
mistake a port can make.
"""

import numpy as np

CORRECT = "correct"
VARIANTS = (
    CORRECT,
    "per_unit",  # each output unit (kernel column) to its own norm
    "scale_offset_apart",  # gamma and beta projected separately
    "unit_norm",  # project onto the unit sphere, not the initial radius
    "project_before_step",  # projection before the update instead of after
)


def _project(weights, groups, initial, variant):
    for group, norm0 in zip(groups, initial):
        if variant == "per_unit" and len(group) == 1:
            w = weights[group[0]]
            if w.ndim >= 2:
                cols0 = norm0
                cols = np.sqrt((w**2).sum(axis=0, keepdims=True))
                weights[group[0]] = w * (cols0 / cols)
                continue
        parts = (
            [[i] for i in group] if variant == "scale_offset_apart" else [group]
        )
        for part in parts:
            norm = np.sqrt(sum((weights[i] ** 2).sum() for i in part))
            target = (
                1.0
                if variant == "unit_norm"
                else _target(norm0, part, group, weights)
            )
            for i in part:
                weights[i] = weights[i] * (target / norm)


def _target(norm0, part, group, weights):
    # With separately projected members, each keeps its own initial norm.
    if isinstance(norm0, dict):
        return norm0[tuple(part)]
    return norm0


def _initial_norms(weights, groups, variant):
    initial = []
    for group in groups:
        if (
            variant == "per_unit"
            and len(group) == 1
            and (weights[group[0]].ndim >= 2)
        ):
            initial.append(
                np.sqrt((weights[group[0]] ** 2).sum(axis=0, keepdims=True))
            )
        elif variant == "scale_offset_apart":
            initial.append(
                {(i,): np.sqrt((weights[i] ** 2).sum()) for i in group}
            )
        else:
            initial.append(np.sqrt(sum((weights[i] ** 2).sum() for i in group)))
    return initial


def nap_trajectory(
    weights,
    grads_seq,
    groups,
    inner="adam",
    learning_rate=1e-2,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-7,
    momentum=0.9,
    variant=CORRECT,
):
    """Weights after each step (a list per step of float64 arrays)."""
    weights = [np.asarray(w, np.float64).copy() for w in weights]
    initial = _initial_norms(weights, groups, variant)
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    trajectory = []
    for t, grads in enumerate(grads_seq, start=1):
        if variant == "project_before_step":
            _project(weights, groups, initial, variant)
        for i, g in enumerate(grads):
            g = np.asarray(g, np.float64)
            if inner == "adam":
                m[i] += (g - m[i]) * (1 - beta_1)
                v[i] += (g * g - v[i]) * (1 - beta_2)
                step = learning_rate * np.sqrt(1 - beta_2**t) / (1 - beta_1**t)
                weights[i] -= step * m[i] / (np.sqrt(v[i]) + epsilon)
            else:
                m[i] = momentum * m[i] - learning_rate * g
                weights[i] += m[i]
        if variant != "project_before_step":
            _project(weights, groups, initial, variant)
        trajectory.append([w.copy() for w in weights])
    return trajectory
