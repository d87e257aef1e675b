"""Forward and training-step time of the normalization layers next to
Keras's BatchNormalization, GroupNormalization and LayerNormalization, on
the same tensors, per backend.

Each layer is called on a `(batch, 32, 32, 64)` channels_last float32
tensor in training mode. "forward" is one call; "train step" is the call
plus the gradient of `sum(y * w)` with respect to the input and the
layer's trainable weights. On TensorFlow both are a `tf.function` with
`jit_compile=True`; on JAX `jax.jit` of the layer's `stateless_call` (and
`jax.grad`); on torch eager calls, as Keras runs them. The layers are
timed round-robin (`--rounds` rounds of `--calls` calls each, after 3
warm-up calls) in one process per backend (`harness.suite`), and the
median per call is reported with its ratio to BatchNormalization's. The
weight-standardized convolutions are timed against `keras.layers.Conv2D`
with the same arguments. With `--device cuda` (JAX and torch; the
environment's TensorFlow is CPU-only) torch calls end with
`torch.cuda.synchronize()`.

Usage (from the repository root):

    python benchmarks/normalization_layers.py --backend all
    python benchmarks/normalization_layers.py --quick --backend jax
    python benchmarks/normalization_layers.py \
        --render-only benchmarks/results/normalization_layers_cpu.jsonl
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
SHAPE = (32, 32, 32, 64)
# --quick: 8 samples (GhostBatchNormalization's virtual batch), 8x8, the
# same 64 channels (32 groups).
QUICK_SHAPE = (8, 8, 8, 64)


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


def _compile(backend, layer, x, mask, sync=lambda: None):
    """`forward()` and `train_step()` closures, each running one call.

    `sync()` waits for the device's queued work (torch on CUDA; a no-op on
    CPU and for the other backends, whose closures wait for their result).
    """
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
            y = layer(x, training=True, **kwargs)
        sync()
        return y

    leaf = x.detach().clone().requires_grad_(True)

    def train_step():
        leaf.grad = None
        for v in layer.trainable_variables:
            v.value.grad = None
        (layer(leaf, training=True, **kwargs) * w).sum().backward()
        sync()
        return leaf.grad

    return forward, train_step


def child(args):
    """One backend: every layer compiled, then timed round-robin."""
    import keras
    import numpy as np

    import keras_batchopt

    backend, shape = args.child, QUICK_SHAPE if args.quick else SHAPE
    sync = device_lib.synchronize(backend, args.device)
    rng = np.random.default_rng(0)
    x = keras.ops.convert_to_tensor(
        rng.normal(1.0, 2.0, shape).astype("float32")
    )
    # The region: the middle half of the image (8:24 of 32).
    h, w = shape[1], shape[2]
    mask = np.zeros(shape[:3] + (1,), "float32")
    mask[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1.0
    mask = keras.ops.convert_to_tensor(mask)
    programs = {}
    for name, make in _layers(keras, keras_batchopt).items():
        if args.only and not re.search(args.only, name):
            continue
        region = mask if name.endswith("(basic)") else None
        fns = _compile(backend, make(), x, region, sync)
        for part, fn in zip(("forward", "train step"), fns):
            for _ in range(3):  # compile and warm up
                fn()
            programs[(name, part)] = fn
    times = {key: [] for key in programs}
    for _ in range(args.rounds):
        for key, fn in programs.items():
            times[key].append(timing.mean_call_ms(fn, args.calls))
    for (name, part), runs in times.items():
        process.emit(
            dict(
                backend=backend,
                layer=name,
                part=part,
                ms=statistics.median(runs),
                runs=runs,
                shape=shape,
                device=args.device,
                repeat=args.repeat,
                calls=args.calls,
            )
        )


def _processes(rows):
    groups = suite.group(rows, "backend", "layer", "part")
    return max(len(g) for g in groups.values())


def render(rows, keep_from=None):
    """The table: median ms per call (rounds of every process pooled)."""
    device = rows[0].get("device", "cpu")
    lines = md.header_lines(
        f"Normalization layers next to Keras's, on {device.upper()}",
        rows,
        keep_from,
    )
    lines += [
        f"- input {tuple(rows[0]['shape'])} float32, channels_last, "
        "training mode; median ms per call over the rounds of "
        f"{_processes(rows)} process(es) per backend",
        "",
        "| backend | layer | forward ms | vs BN | train step ms | vs BN |",
        "|---|---|---|---|---|---|",
    ]
    ms = {
        key: suite.pooled_median(group)
        for key, group in suite.group(rows, "backend", "layer", "part").items()
    }
    names = list(dict.fromkeys(r["layer"] for r in rows))
    for backend in BACKENDS:
        if not any(key[0] == backend for key in ms):
            continue
        for name in names:
            base = "Conv2D(64, 3)" if "Conv2D" in name else "BatchNormalization"
            f = ms.get((backend, name, "forward"), float("nan"))
            t = ms.get((backend, name, "train step"), float("nan"))
            bf = ms.get((backend, base, "forward"), float("nan"))
            bt = ms.get((backend, base, "train step"), float("nan"))
            suffix = "" if base == "BatchNormalization" else " (vs Conv2D)"
            lines.append(
                f"| {backend} | {name}{suffix} | {f:.2f} | {f / bf:.2f} | "
                f"{t:.2f} | {t / bt:.2f} |"
            )
    return "\n".join(lines) + "\n"


def _backends(args):
    return cli.device_backends(args, BACKENDS)


def run_suite(args, path):
    units = [(b, b) for b in _backends(args)]
    return suite.run(args, path, units, cli.rounds_child_argv(__file__, args))


def plan(args):
    shape = QUICK_SHAPE if args.quick else SHAPE
    return [
        f"normalization_layers: {args.repeats} process(es) per backend "
        f"({', '.join(_backends(args))}), device {args.device}, input "
        f"{shape}, {args.rounds} rounds of {args.calls} calls per layer and "
        f"part, layers matching {args.only or 'any'}"
    ]


def parse(argv=None):
    return cli.parse_rounds(
        argv,
        __doc__.split("\n")[0],
        "normalization_layers_{device}.jsonl",
        BACKENDS,
        rounds=7,
        calls=5,
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
