"""Forward and training-step time of the normalization layers next to
Keras's BatchNormalization, GroupNormalization and LayerNormalization, on
the same tensors, per backend, on CPU.

Each layer is called on a `(batch, 32, 32, 64)` channels_last float32
tensor in training mode. "forward" is one call; "train step" is the call
plus the gradient of `sum(y * w)` with respect to the input and the
layer's trainable weights. On TensorFlow both are a `tf.function` with
`jit_compile=True`; on JAX `jax.jit` of the layer's `stateless_call` (and
`jax.grad`); on torch eager calls, as Keras runs them. The layers are
timed round-robin (`--rounds` rounds of `--calls` calls each) in one
process per backend, and the median per call is reported with its ratio
to BatchNormalization's. The weight-standardized convolutions are timed
against `keras.layers.Conv2D` with the same arguments.

Usage (from the repository root):

    python benchmarks/normalization_layers.py --backend all \
        --out benchmarks/results/normalization_layers_cpu.jsonl
    python benchmarks/normalization_layers.py \
        --table-only benchmarks/results/normalization_layers_cpu.jsonl
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

from schedules_and_batch_tests import machine
from schedules_and_batch_tests import versions

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")
SHAPE = (32, 32, 32, 64)


def _layers(keras, keras_batchopt):
    L = keras_batchopt.layers
    return {
        "BatchNormalization": lambda: keras.layers.BatchNormalization(),
        "GroupNormalization(32)": lambda: keras.layers.GroupNormalization(32),
        "LayerNormalization": lambda: keras.layers.LayerNormalization(),
        "GhostBatchNormalization(8)": lambda: L.GhostBatchNormalization(8),
        "GhostBatchNormalization(8, sequential)": lambda: (
            L.GhostBatchNormalization(8, moving_statistics="sequential")
        ),
        "BatchChannelNormalization(32)": lambda: L.BatchChannelNormalization(
            32
        ),
        "BatchChannelNormalization(32, batch)": lambda: (
            L.BatchChannelNormalization(32, batch_statistics="batch")
        ),
        "InstanceBatchNormalization(0.5)": lambda: L.InstanceBatchNormalization(
            0.5
        ),
        "RegionNormalization(basic)": lambda: L.RegionNormalization(
            data_format="channels_last"
        ),
        "RegionNormalization(learned)": lambda: L.RegionNormalization(
            mode="learned", data_format="channels_last"
        ),
        "Conv2D(64, 3)": lambda: keras.layers.Conv2D(64, 3, padding="same"),
        "WSConv2D(64, 3)": lambda: L.WSConv2D(64, 3, padding="same"),
        "ScaledWSConv2D(64, 3)": lambda: L.ScaledWSConv2D(
            64, 3, padding="same"
        ),
    }


def _compile(backend, layer, x, mask):
    """`forward()` and `train_step()` closures, each running one call."""
    import keras
    import numpy as np

    kwargs = {}
    if mask is not None:
        kwargs["region_mask"] = mask
    layer(x, training=True, **kwargs)  # build
    w = keras.ops.convert_to_tensor(
        np.random.default_rng(1).normal(size=x.shape).astype("float32")
    )
    if backend == "tensorflow":
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def forward():
            return layer(x, training=True, **kwargs)

        @tf.function(jit_compile=True)
        def train_step():
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(layer(x, training=True, **kwargs) * w)
            return tape.gradient(loss, [x] + layer.trainable_variables)

        return (lambda: forward().numpy()), (
            lambda: [g.numpy() for g in train_step()]
        )
    if backend == "jax":
        import inspect

        import jax

        if "training" in inspect.signature(layer.call).parameters:
            kwargs["training"] = True  # `stateless_call` calls `call`
        trainable = [v.value for v in layer.trainable_variables]
        non_trainable = [v.value for v in layer.non_trainable_variables]

        def loss(trainable, non_trainable, x):
            y, _ = layer.stateless_call(trainable, non_trainable, x, **kwargs)
            return (y * w).sum()

        forward_fn = jax.jit(
            lambda t, n, x: layer.stateless_call(t, n, x, **kwargs)
        )
        grad_fn = jax.jit(jax.grad(loss, argnums=(0, 2)))
        return (
            lambda: jax.block_until_ready(
                forward_fn(trainable, non_trainable, x)
            ),
            lambda: jax.block_until_ready(grad_fn(trainable, non_trainable, x)),
        )
    import torch

    def forward():
        with torch.no_grad():
            return layer(x, training=True, **kwargs)

    leaf = x.detach().clone().requires_grad_(True)

    def train_step():
        leaf.grad = None
        for v in layer.trainable_variables:
            v.value.grad = None
        (layer(leaf, training=True, **kwargs) * w).sum().backward()
        return leaf.grad

    return forward, train_step


def child(backend, rounds, calls):
    import keras
    import numpy as np

    import keras_batchopt

    rng = np.random.default_rng(0)
    x = keras.ops.convert_to_tensor(
        rng.normal(1.0, 2.0, SHAPE).astype("float32")
    )
    mask = np.zeros(SHAPE[:3] + (1,), "float32")
    mask[:, 8:24, 8:24] = 1.0
    mask = keras.ops.convert_to_tensor(mask)
    programs = {}
    for name, make in _layers(keras, keras_batchopt).items():
        fns = _compile(
            backend, make(), x, mask if name.endswith("(basic)") else None
        )
        for part, fn in zip(("forward", "train step"), fns):
            for _ in range(3):  # compile and warm up
                fn()
            programs[(name, part)] = fn
    times = {key: [] for key in programs}
    for _ in range(rounds):
        for key, fn in programs.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[key].append((time.perf_counter() - start) / calls * 1e3)
    return [
        dict(
            backend=backend,
            layer=name,
            part=part,
            ms=statistics.median(runs),
            runs=runs,
            shape=SHAPE,
        )
        for (name, part), runs in times.items()
    ]


def table(rows):
    meta = rows[0].get("meta", {})
    lines = [
        f"Machine: {meta.get('machine')}  ",
        f"Versions: {meta.get('versions')}  ",
        f"Commit: {meta.get('commit')}, {meta.get('date')}  ",
        f"Input: {tuple(rows[0]['shape'])} float32, channels_last, "
        "training mode; median ms per call.",
        "",
        "| backend | layer | forward ms | vs BN | train step ms | vs BN |",
        "|---|---|---|---|---|---|",
    ]
    for backend in BACKENDS:
        sel = {
            (r["layer"], r["part"]): r["ms"]
            for r in rows
            if r["backend"] == backend
        }
        if not sel:
            continue
        names = list(dict.fromkeys(r["layer"] for r in rows))
        for name in names:
            base = "Conv2D(64, 3)" if "Conv2D" in name else "BatchNormalization"
            f, t = sel[(name, "forward")], sel[(name, "train step")]
            bf, bt = sel[(base, "forward")], sel[(base, "train step")]
            suffix = "" if base == "BatchNormalization" else " (vs Conv2D)"
            lines.append(
                f"| {backend} | {name}{suffix} | {f:.2f} | {f / bf:.2f} | "
                f"{t:.2f} | {t / bt:.2f} |"
            )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="all")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--out")
    parser.add_argument("--table-only")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        rows = child(args.child, args.rounds, args.calls)
        print("ROWS " + json.dumps(rows))
        return
    if args.table_only:
        with open(args.table_only) as f:
            rows = [json.loads(line) for line in f]
        print(table(rows))
        return
    backends = BACKENDS if args.backend == "all" else [args.backend]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    meta = dict(
        machine=machine(),
        versions=versions(),
        commit=commit,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
    )
    rows = []
    for backend in backends:
        env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
        result = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                backend,
                "--rounds",
                str(args.rounds),
                "--calls",
                str(args.calls),
            ],
            env=env,
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
        )
        found = [
            ln for ln in result.stdout.splitlines() if ln.startswith("ROWS ")
        ]
        if result.returncode or not found:
            print(result.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{backend} failed")
        for row in json.loads(found[0][5:]):
            row["meta"] = meta
            rows.append(row)
        print(f"{backend} done", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
