"""Cost of Immiscible Diffusion's noise assignment on the CPU.

Host part (NumPy, no backend; its own process): the exact assignment
`keras_batchopt.strategies.assign_noise` on a batch of 256 images 28x28
(uniform data in [-1, 1], standard-normal noise): the float16 distance
matrix, the linear assignment with SciPy and with the package's NumPy
fallback solver, and the whole call.

Compiled part (one process per backend): the KNN version
`sample_nearest_noise(data, k)` (draw k candidates per image, keep the
nearest) next to drawing the k candidates alone and to drawing plain
noise (one draw per image), each compiled (`jax.jit`; `tf.function` with
`jit_compile=True`; torch eager, as Keras runs it by default). Cases are
timed round-robin (`--rounds` rounds of `--calls` calls after 3 warm-up
calls); the median per call is reported, the compiled rows with their
ratio to drawing the k candidates.

Usage (from the repository root):

    python benchmarks/noise_assignment.py --backend all
    python benchmarks/noise_assignment.py --backend jax --k 64
    python benchmarks/noise_assignment.py --quick --backend jax
    python benchmarks/noise_assignment.py \
        --render-only benchmarks/results/noise_assignment_cpu.jsonl
"""

import re
import statistics
import sys

from harness import cli
from harness import process
from harness import render as md
from harness import suite
from harness import timing

BACKENDS = ("jax", "tensorflow", "torch")
HOST = "host"
BATCH, K = 256, 64
QUICK_BATCH, QUICK_K = 16, 4
DRAW = "normal (B, k, ...)"


def _sizes(args):
    return (QUICK_BATCH, QUICK_K) if args.quick else (BATCH, K)


def host_cases(batch):
    """name -> zero-argument callable, the host (NumPy) cases."""
    import numpy as np

    from keras_batchopt.src.strategies import linear_assignment as lsa
    from keras_batchopt.src.strategies.assign_noise import assignment_distances
    from keras_batchopt.strategies import assign_noise

    rng = np.random.default_rng(0)
    data = rng.uniform(-1, 1, (batch, 28, 28, 1)).astype("float32")
    noise = rng.normal(size=data.shape).astype("float32")
    cost = assignment_distances(data, noise)
    return {
        "distances": lambda: assignment_distances(data, noise),
        "assignment (scipy)": lambda: lsa.linear_sum_assignment(cost, "scipy"),
        "assignment (numpy)": lambda: lsa.linear_sum_assignment(cost, "numpy"),
        "assign_noise (auto)": lambda: assign_noise(data, noise),
    }


def _compiled(backend, fn):
    if backend == "jax":
        import jax

        return jax.jit(fn)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.function(fn, jit_compile=True)
    return fn


def compiled_cases(backend, batch, k):
    """name -> zero-argument callable, each compiled on `backend` and
    waiting for its result."""
    import keras
    import numpy as np

    from keras_batchopt import strategies

    data = np.random.default_rng(0).uniform(-1, 1, (batch, 28, 28, 1))
    data = keras.ops.convert_to_tensor(data.astype("float32"))
    shape = tuple(data.shape)
    seed = keras.random.SeedGenerator(0) if backend != "jax" else 0
    fns = {
        "normal (B, ...)": lambda x: keras.random.normal(shape, seed=seed),
        DRAW: lambda x: keras.random.normal(
            (shape[0], k) + shape[1:], seed=seed
        ),
        "sample_nearest_noise": lambda x: strategies.sample_nearest_noise(
            x, k=k, seed=seed
        ),
    }

    def blocking(step):
        return lambda: keras.ops.convert_to_numpy(keras.ops.sum(step(data)))

    return {name: blocking(_compiled(backend, fn)) for name, fn in fns.items()}


def child(args):
    """One unit (the host, or one backend): every case warmed up, then
    timed round-robin."""
    batch, k = _sizes(args)
    unit = args.child
    cases = (
        host_cases(batch) if unit == HOST else compiled_cases(unit, batch, k)
    )
    if args.only:
        cases = {n: f for n, f in cases.items() if re.search(args.only, n)}
    for fn in cases.values():
        for _ in range(3):
            fn()
    times = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, fn in cases.items():
            times[name].append(timing.mean_call_ms(fn, args.calls))
    for name, runs in times.items():
        process.emit(
            dict(
                unit=unit,
                case=name,
                ms=statistics.median(runs),
                runs=runs,
                batch=batch,
                k=k,
                device=args.device,
                repeat=args.repeat,
                calls=args.calls,
            )
        )


def render(rows, keep_from=None):
    """Two tables: the host cases, and the compiled cases per backend with
    their ratio to drawing the k candidates."""
    lines = md.header_lines(
        "Immiscible Diffusion's noise assignment on the CPU", rows, keep_from
    )
    batch, k = rows[0]["batch"], rows[0]["k"]
    ms = {
        key: suite.pooled_median(group)
        for key, group in suite.group(rows, "unit", "case").items()
    }
    lines += [
        f"- batch {batch} of 28x28 images, k = {k}; median ms per call over "
        "the rounds of every process, one process per unit",
        "",
        "Exact assignment on the host (NumPy):",
        "",
        "| case | ms per call |",
        "|---|---|",
    ]
    lines += [
        f"| {case} | {t:.2f} |"
        for (unit, case), t in ms.items()
        if unit == HOST
    ]
    lines += [
        "",
        f"KNN assignment, compiled (ratio to drawing the {k} candidates):",
        "",
        "| backend | case | ms per call | vs the draw |",
        "|---|---|---|---|",
    ]
    for backend in BACKENDS:
        base = ms.get((backend, DRAW), float("nan"))
        for (unit, case), t in ms.items():
            if unit == backend:
                lines.append(
                    f"| {backend} | {case} | {t:.2f} | {t / base:.2f} |"
                )
    return "\n".join(lines) + "\n"


def _units(args):
    return [("jax", HOST)] + [
        (b, b) for b in cli.device_backends(args, BACKENDS)
    ]


def run_suite(args, path):
    def argv(backend, label, repeat):
        out = [__file__, "--child", label, "--repeat", str(repeat)]
        out += ["--rounds", str(args.rounds), "--calls", str(args.calls)]
        out += ["--only", args.only] if args.only else []
        return out + (["--quick"] if args.quick else [])

    # One thread: SciPy's solver and the NumPy fallback are single-threaded.
    return suite.run(args, path, _units(args), argv, threads=1)


def plan(args):
    batch, k = _sizes(args)
    units = ", ".join(label for _, label in _units(args))
    return [
        f"noise_assignment: {args.repeats} process(es) per unit ({units}), "
        f"batch {batch} of 28x28, k={k}, {args.rounds} rounds of "
        f"{args.calls} calls per case"
    ]


def parse(argv=None):
    return cli.parse_rounds(
        argv,
        __doc__.split("\n")[0],
        "noise_assignment_{device}.jsonl",
        BACKENDS,
        rounds=5,
        calls=4,
        only_help="regex of case names",
    )


def main(argv=None):
    args = parse(argv)
    if args.child:
        child(args)
        return 0
    if args.device != "cpu":
        print("--device: this benchmark runs on the CPU only", file=sys.stderr)
        return 2
    return cli.main(
        args, cli.device_backends(args, BACKENDS), run_suite, render, plan
    )


if __name__ == "__main__":
    sys.exit(main())
