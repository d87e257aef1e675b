"""NumPy (float64) reference of AdaB2N, in the NCHW layout.

A port of `AdaB2N` in `models/utils/adab2n.py` and of the code that drives
it (`set_counts`, `end_task` and the `loss_norm` term of `observe` in
`models/er_ace_ada.py`) of https://github.com/lvyilin/AdaB2N at commit
9aaba7e4ac848e5bce42a7da7df15e4453924b75 (Lyu et al., NeurIPS 2023).

One training forward of the official module, with `m` PyTorch's momentum:

    num_batches_tracked += 1
    eta = get_eta()          # kappa 0: 1 / num_batches_tracked;
                             # kappa 1: m; first call: m ** kappa;
                             # then last / (last + (1 - m) ** kappa)
    if task ids were set and cur_tasks > 0:
        c = exp(task_weight[:cur_tasks + 1]) + counts_per_task
        s_i = (c / c.sum())[task_i] / count_of(task_i)
        mean = sum_i s_i * mean_hw(x_i)
        var = sum_i s_i * mean_hw((x_i - mean) ** 2)
    else:
        mean, var = biased batch moments over (N, H, W)
    y = (x - mean) / sqrt(var + eps) * weight + bias
    running_mean += eta * (mean - running_mean)
    running_var = (1 - eta) * running_var + eta * var
    loss = mse(mean, running_mean) + mse(var, running_var)  # new running

and `observe` adds `lambd * loss` (summed over the layers) from task
`ada_t0` on. Inference is `F.batch_norm` with the running statistics.

The gradient of a loss with respect to the task weights and the affine
parameters is taken here by central differences in float64 of the same
forward, with the running statistics that enter the loss held fixed
(they are detached in the official code).
"""

import numpy as np


def _channel(v, ndim):
    return np.reshape(v, (1, -1) + (1,) * (ndim - 2))


def eta_sequence(steps, momentum, kappa):
    """The official `get_eta` for `steps` training batches; `momentum` is
    PyTorch's (the weight of the new batch)."""
    etas, last = [], None
    for step in range(1, steps + 1):
        if kappa == 0.0:
            eta = 1.0 / step
        elif kappa == 1.0:
            eta = momentum
        elif last is None:
            eta = last = momentum**kappa
        else:
            eta = last = last / (last + (1 - momentum) ** kappa)
        etas.append(eta)
    return np.array(etas)


def sample_weights(task_ids, task_weight, cur_task):
    """`set_counts` and the concentration of `training_forward`."""
    task_ids = np.asarray(task_ids)
    counts = np.zeros(cur_task + 1)
    present, inverse, n = np.unique(
        task_ids, return_inverse=True, return_counts=True
    )
    counts[present] = n
    concentration = np.exp(task_weight[: cur_task + 1]) + counts
    share = concentration / concentration.sum()
    return share[task_ids] / n[inverse]


def batch_moments(x, task_ids, task_weight, cur_task):
    """The batch mean and (biased) variance of `training_forward`."""
    if task_ids is not None and cur_task > 0:
        s = sample_weights(task_ids, task_weight, cur_task)
        mean = x.mean((2, 3)).T @ s
        var = np.square(x - _channel(mean, 4)).mean((2, 3)).T @ s
        return mean, var
    return x.mean((0, 2, 3)), x.var((0, 2, 3))


def normalize(x, mean, var, gamma, beta, eps):
    y = (x - _channel(mean, 4)) / np.sqrt(_channel(var, 4) + eps)
    return y * _channel(gamma, 4) + _channel(beta, 4)


def forward(x, task_ids, params, state, eps):
    """One training forward: the output, the batch moments, the new
    running moments and the (unweighted) statistics loss."""
    mean, var = batch_moments(
        x, task_ids, params["task_weight"], state["cur_task"]
    )
    eta = state["eta"]
    running_mean = state["running_mean"] + eta * (mean - state["running_mean"])
    running_var = (1 - eta) * state["running_var"] + eta * var
    loss = np.mean(np.square(mean - running_mean)) + np.mean(
        np.square(var - running_var)
    )
    y = normalize(x, mean, var, params["gamma"], params["beta"], eps)
    return y, mean, var, running_mean, running_var, loss


def objective(x, task_ids, params, state, eps, cotangent, lambd, ada_t0):
    """`mean_over_batch(sum(cotangent * y)) + lambd * loss` with the new
    running moments held fixed (as detached in the official code)."""
    mean, var = batch_moments(
        x, task_ids, params["task_weight"], state["cur_task"]
    )
    y = normalize(x, mean, var, params["gamma"], params["beta"], eps)
    value = np.sum(cotangent * y) / x.shape[0]
    if state["cur_task"] >= ada_t0:
        value += lambd * (
            np.mean(np.square(mean - state["fixed_mean"]))
            + np.mean(np.square(var - state["fixed_var"]))
        )
    return value


def gradients(fn, params, step=1e-6):
    """Central differences of `fn(params)` for every entry."""
    grads = {}
    for name, value in params.items():
        grad = np.zeros_like(value)
        for i in range(value.size):
            shifted = []
            for sign in (1.0, -1.0):
                moved = {k: v.copy() for k, v in params.items()}
                moved[name].flat[i] += sign * step
                shifted.append(fn(moved))
            grad.flat[i] = (shifted[0] - shifted[1]) / (2 * step)
        grads[name] = grad
    return grads


def train_step(x, task_ids, params, state, hyper, cotangent):
    """One SGD step of the layer alone on the objective above; updates
    `params` and `state` in place; returns the forward's values."""
    x = np.asarray(x, np.float64)
    state["step"] += 1
    state["eta"] = eta_sequence(
        state["step"], hyper["momentum"], hyper["kappa"]
    )[-1]
    y, mean, var, running_mean, running_var, loss = forward(
        x, task_ids, params, state, hyper["eps"]
    )
    state["fixed_mean"], state["fixed_var"] = running_mean, running_var

    def fn(p):
        return objective(
            x,
            task_ids,
            p,
            state,
            hyper["eps"],
            cotangent,
            hyper["lambd"],
            hyper["ada_t0"],
        )

    total = fn(params)
    grads = gradients(fn, params)
    for name in params:
        params[name] = params[name] - hyper["learning_rate"] * grads[name]
    state["running_mean"], state["running_var"] = running_mean, running_var
    return {"y": y, "mean": mean, "var": var, "loss": loss, "total": total}
