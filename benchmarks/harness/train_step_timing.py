"""Round-robin timing of `model.train_on_batch` for a few compiled models.

Shared by the scripts that compare one training step against another on
the same backend and model (`ada_hessian_step.py`, `conadv_step.py`):
every model is built and warmed up, then all are timed round-robin for
`rounds` rounds of `steps` steps, with the CPU accounting of each timed
loop, and one row per model is emitted to the parent.
"""

import time

from harness import machine
from harness import process


def set_threads(backend, threads):
    """Limits TensorFlow's or torch's thread pools (before any model)."""
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)


def _warm_up(names, build, x, y, warmup):
    """Builds every model; times its first call, then warms it up."""
    models, first = {}, {}
    for name in names:
        model = build(name)
        t0 = time.perf_counter()
        model.train_on_batch(x, y)
        first[name] = time.perf_counter() - t0
        for _ in range(warmup - 1):
            model.train_on_batch(x, y)
        models[name] = model
    return models, first


def _time_rounds(models, x, y, rounds, steps):
    """Per model: round means (ms), all step times (ms), own CPU s, busy
    CPU s (all processes) and wall s of the timed loops."""
    import numpy as np

    stats = {
        name: dict(per_round=[], times=[], own=0.0, busy=0.0, wall=0.0)
        for name in models
    }
    for _ in range(rounds):
        for name, model in models.items():
            s = stats[name]
            b0, o0 = machine.cpu_busy_s(), machine.own_cpu_s()
            w0 = time.perf_counter()
            ts = []
            for _ in range(steps):
                t = time.perf_counter()
                model.train_on_batch(x, y)
                ts.append((time.perf_counter() - t) * 1e3)
            b1, o1 = machine.cpu_busy_s(), machine.own_cpu_s()
            w1 = time.perf_counter()
            s["own"] += o1 - o0
            s["busy"] += b1 - b0
            s["wall"] += w1 - w0
            s["times"] += ts
            s["per_round"].append(float(np.mean(ts)))
    return stats


def run(names, build, x, y, warmup, rounds, steps, fields):
    """Builds, warms up and times the models `build(name)` returns for
    each of `names` (compiled, ready for `train_on_batch(x, y)`), then
    emits one row per name: `fields` plus `config` (`fields["config"]`
    joined to the name), `opt`, the parameter count of the first model
    and the timings."""
    import keras
    import numpy as np

    models, first = _warm_up(names, build, x, y, warmup)
    n_params = models[names[0]].count_params()
    stats = _time_rounds(models, x, y, rounds, steps)
    for name in names:
        s = stats[name]
        iterations = int(
            keras.ops.convert_to_numpy(models[name].optimizer.iterations)
        )
        process.emit(
            dict(
                fields,
                config=f"{fields['config']}-{name}",
                opt=name,
                n_params=n_params,
                round_mean_ms=s["per_round"],
                median_step_ms=float(np.median(s["times"])),
                first_call_s=first[name],
                own_cores=s["own"] / s["wall"],
                foreign_cores=max(s["busy"] - s["own"], 0.0) / s["wall"],
                iterations=iterations,
                times_ms=[round(t, 3) for t in s["times"]],
            )
        )
