"""One adapting inference step of the test-time normalization layers next
to Keras's BatchNormalization in training mode, on the same batch, per
backend.

An adapting step normalizes a test batch and updates the layer's state,
without gradient: `keras.layers.BatchNormalization` called with
`training=True` (batch statistics; the moving statistics updated), the
baseline; `AlphaBatchNormalization(alpha=0.1)` in inference (no state);
`UnMixTestTimeNormalization` with K = 16 components in inference
(per-instance statistics, the components updated); and
`MomentumDecayBatchNormalization` in inference (DUA and the source-free
layer: batch statistics, the moving statistics updated with the decaying
momentum). The input is a
`(64, 16, 16, 32)` channels_last float32 tensor. On TensorFlow each step
is a `tf.function` with `jit_compile=True`; on JAX `jax.jit` of the
layer's `stateless_call`, its new state fed to the next step; on torch
eager calls under `torch.no_grad()`, as Keras runs them. The layers are
timed round-robin (`--rounds` rounds of `--calls` calls each, after 3
warm-up calls) in one process per backend (`harness.suite`), each with
one CPU thread (OMP, MKL, TensorFlow's and torch's pools: on a small
shared machine, two threads made each of torch's tiny operations on the
`(batch, K)` assignment wait ~60 ms for a core); the median per call is
reported with its ratio to BatchNormalization's.

Usage (from the repository root):

    python benchmarks/test_time_normalization_step.py --backend all
    python benchmarks/test_time_normalization_step.py --quick --backend jax
    python benchmarks/test_time_normalization_step.py \
        --render-only benchmarks/results/test_time_normalization_step_cpu.jsonl
"""

import re
import statistics
import sys

from harness import cli
from harness import device as device_lib
from harness import process
from harness import render as md
from harness import suite
from harness import timing

BACKENDS = ("tensorflow", "jax", "torch")
SHAPE = (64, 16, 16, 32)
QUICK_SHAPE = (8, 8, 8, 32)
BASELINE = "BatchNormalization (training)"
THREADS = 1


def _layers(keras, keras_batchopt):
    """name -> (factory, `training` of the adapting call)."""
    L = keras_batchopt.layers
    return {
        BASELINE: (lambda: keras.layers.BatchNormalization(), True),
        "AlphaBatchNormalization(0.1)": (
            lambda: L.AlphaBatchNormalization(alpha=0.1),
            False,
        ),
        "UnMixTestTimeNormalization(K=16)": (
            lambda: L.UnMixTestTimeNormalization(num_components=16, seed=0),
            False,
        ),
        "MomentumDecayBatchNormalization": (
            lambda: L.MomentumDecayBatchNormalization(),
            False,
        ),
    }


def _compile(backend, layer, training, x, sync=lambda: None):
    """A closure running one adapting step (the state carried over)."""
    layer(x, training=training)  # build
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def step():
            return layer(x, training=training)

        return lambda: step().numpy()
    if backend == "jax":
        import jax

        trainable = [v.value for v in layer.trainable_variables]
        state = [[v.value for v in layer.non_trainable_variables]]
        fn = jax.jit(
            lambda t, n, x: layer.stateless_call(t, n, x, training=training)
        )

        def step():
            y, state[0] = fn(trainable, state[0], x)
            return jax.block_until_ready(y)

        return step
    import torch

    def step():
        with torch.no_grad():
            y = layer(x, training=training)
        sync()
        return y

    return step


def child(args):
    """One backend: every layer compiled, then timed round-robin."""
    import keras
    import numpy as np

    import keras_batchopt

    backend, shape = args.child, QUICK_SHAPE if args.quick else SHAPE
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(THREADS)
    elif backend == "torch":
        import torch

        torch.set_num_threads(THREADS)
    sync = device_lib.synchronize(backend, args.device)
    rng = np.random.default_rng(0)
    x = keras.ops.convert_to_tensor(
        rng.normal(1.0, 2.0, shape).astype("float32")
    )
    programs = {}
    for name, (make, training) in _layers(keras, keras_batchopt).items():
        if args.only and not re.search(args.only, name):
            continue
        fn = _compile(backend, make(), training, x, sync)
        for _ in range(3):  # compile and warm up
            fn()
        programs[name] = fn
    times = {key: [] for key in programs}
    for _ in range(args.rounds):
        for key, fn in programs.items():
            times[key].append(timing.mean_call_ms(fn, args.calls))
    for name, runs in times.items():
        process.emit(
            dict(
                backend=backend,
                layer=name,
                ms=statistics.median(runs),
                runs=runs,
                shape=shape,
                device=args.device,
                repeat=args.repeat,
                calls=args.calls,
            )
        )


def _processes(rows):
    return max(len(g) for g in suite.group(rows, "backend", "layer").values())


def render(rows, keep_from=None):
    """The table: median ms per step (rounds of every process pooled)."""
    device = rows[0].get("device", "cpu")
    lines = md.header_lines(
        "An adapting test-time normalization step next to BatchNormalization"
        f" in training mode, on {device.upper()}",
        rows,
        keep_from,
    )
    lines += [
        f"- input {tuple(rows[0]['shape'])} float32, channels_last, one "
        "step without gradient that updates the layer's state; median ms "
        f"per step over the rounds of {_processes(rows)} process(es) per "
        "backend, one CPU thread",
        "",
        "| backend | layer | ms per step | vs BN (training) |",
        "|---|---|---|---|",
    ]
    ms = {
        key: suite.pooled_median(group)
        for key, group in suite.group(rows, "backend", "layer").items()
    }
    names = list(dict.fromkeys(r["layer"] for r in rows))
    for backend in BACKENDS:
        if not any(key[0] == backend for key in ms):
            continue
        base = ms.get((backend, BASELINE), float("nan"))
        for name in names:
            t = ms.get((backend, name), float("nan"))
            lines.append(f"| {backend} | {name} | {t:.3f} | {t / base:.2f} |")
    return "\n".join(lines) + "\n"


def _backends(args):
    return cli.device_backends(args, BACKENDS)


def run_suite(args, path):
    units = [(b, b) for b in _backends(args)]
    return suite.run(
        args,
        path,
        units,
        cli.rounds_child_argv(__file__, args),
        threads=THREADS,
    )


def plan(args):
    shape = QUICK_SHAPE if args.quick else SHAPE
    return [
        f"test_time_normalization_step: {args.repeats} process(es) per "
        f"backend ({', '.join(_backends(args))}), device {args.device}, "
        f"input {shape}, {args.rounds} rounds of {args.calls} calls per "
        f"layer, layers matching {args.only or 'any'}"
    ]


def parse(argv=None):
    return cli.parse_rounds(
        argv,
        __doc__.split("\n")[0],
        "test_time_normalization_step_{device}.jsonl",
        BACKENDS,
        rounds=7,
        calls=10,
        only_help="regex of layer names",
    )


def main(argv=None):
    args = parse(argv)
    if args.child:
        child(args)
        return 0
    return cli.main(args, _backends(args), run_suite, render, plan)


if __name__ == "__main__":
    sys.exit(main())
