"""Cost of Immiscible Diffusion's noise assignment on the CPU.

Host part (NumPy, no backend): `keras_batchopt.strategies.assign_noise`
on a batch of 256 images 28x28 (uniform data in [-1, 1], standard-normal
noise): the float16 distance matrix, the linear assignment with SciPy and
with the NumPy fallback solver, and the whole call.

Compiled part (per backend, one process each): the KNN version
`sample_nearest_noise(data, k)` (draw k candidates per image, keep the
nearest) next to drawing the k candidates alone and to drawing plain noise
(one draw per image), each compiled (`jax.jit`; `tf.function` with
`jit_compile=True`; torch eager, as Keras runs it by default). The
median of `--calls` calls after 3 warm-up calls is reported.

Usage (from the repository root):

    python benchmarks/noise_assignment.py                # all backends
    python benchmarks/noise_assignment.py --backend jax --k 64
    python benchmarks/noise_assignment.py --quick        # tiny, smoke test
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("jax", "tensorflow", "torch")


def _median_ms(fn, calls):
    for _ in range(3):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def host(batch, calls):
    import numpy as np

    from keras_batchopt.src.strategies import linear_assignment as lsa
    from keras_batchopt.src.strategies.assign_noise import assignment_distances
    from keras_batchopt.strategies import assign_noise

    rng = np.random.default_rng(0)
    data = rng.uniform(-1, 1, (batch, 28, 28, 1)).astype("float32")
    noise = rng.normal(size=data.shape).astype("float32")
    cost = assignment_distances(data, noise)
    rows = {
        "distances": _median_ms(
            lambda: assignment_distances(data, noise), calls
        ),
        "assignment (scipy)": _median_ms(
            lambda: lsa.linear_sum_assignment(cost, "scipy"), calls
        ),
        "assignment (numpy)": _median_ms(
            lambda: lsa.linear_sum_assignment(cost, "numpy"),
            max(3, calls // 5),
        ),
        "assign_noise (auto)": _median_ms(
            lambda: assign_noise(data, noise), calls
        ),
    }
    return rows


def _compiled(backend, fn):
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    return fn


def _block(x):
    import keras

    return keras.ops.convert_to_numpy(keras.ops.sum(x))


def compiled(backend, batch, k, calls):
    os.environ["KERAS_BACKEND"] = backend
    import keras
    import numpy as np

    from keras_batchopt import strategies

    data = np.random.default_rng(0).uniform(-1, 1, (batch, 28, 28, 1))
    data = keras.ops.convert_to_tensor(data.astype("float32"))
    shape = tuple(data.shape)
    seed = keras.random.SeedGenerator(0) if backend != "jax" else 0
    fns = {
        "normal (B, ...)": lambda x: keras.random.normal(shape, seed=seed),
        f"normal (B, {k}, ...)": lambda x: keras.random.normal(
            (shape[0], k) + shape[1:], seed=seed
        ),
        f"sample_nearest_noise k={k}": lambda x: (
            strategies.sample_nearest_noise(x, k=k, seed=seed)
        ),
    }
    rows = {}
    for name, fn in fns.items():
        step = _compiled(backend, fn)
        rows[name] = _median_ms(lambda: _block(step(data)), calls)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=(*BACKENDS, "all"), default="all")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--k", type=int, default=64)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.batch, args.k, args.calls = 16, 4, 3
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    if args.dry_run:
        print(
            f"noise_assignment: host, then {', '.join(backends)}; "
            f"batch {args.batch} of 28x28, k={args.k}, {args.calls} calls"
        )
        return
    if args.worker:
        rows = compiled(args.worker, args.batch, args.k, args.calls)
        print(json.dumps(rows))
        return
    print(f"host (NumPy), batch {args.batch} of 28x28: median ms per call")
    for name, ms in host(args.batch, args.calls).items():
        print(f"  {name:28s} {ms:9.2f}")
    for backend in backends:
        argv = [sys.executable, __file__, "--worker", backend]
        argv += ["--batch", str(args.batch), "--k", str(args.k)]
        argv += ["--calls", str(args.calls)]
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        out = subprocess.run(
            argv, capture_output=True, text=True, cwd=ROOT, env=env
        )
        if out.returncode:
            print(f"{backend}: failed\n{out.stderr[-2000:]}")
            continue
        rows = json.loads(out.stdout.strip().splitlines()[-1])
        base = rows[f"normal (B, {args.k}, ...)"]
        print(f"{backend}, compiled: median ms per call (ratio to the draw)")
        for name, ms in rows.items():
            print(f"  {name:28s} {ms:9.2f}  x{ms / base:.2f}")


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    main()
