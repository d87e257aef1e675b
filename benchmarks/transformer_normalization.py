"""Training-step and inference time of a small transformer block with each
normalization layer in its two pre-norm positions, next to Keras's
LayerNormalization and BatchNormalization, per backend.

The block: tokens (batch 32, 64 tokens, width 128) -> norm ->
MultiHeadAttention(4 heads) -> residual -> norm -> Dense(256, gelu) ->
Dense(128) -> residual -> norm -> Dense(2). Each variant is a Keras model
compiled with SGD and run through Keras's own `train_on_batch` and
`predict_on_batch` (jit on TensorFlow and JAX, eager on torch, as Keras
runs them; both return host values, so a GPU has finished when they
return), so the numbers are what a user of `fit`/`predict` gets. The
"folded" rows are `keras_batchopt.layers.fold_normalization` of the
trained model: the norm after attention merges into the following Dense,
the others become `ChannelAffine` (attention input, classifier head).
Variants are timed round-robin (`--rounds` rounds of `--calls` calls) in
one process per backend (`harness.suite`); the median per call is
reported with its ratio to LayerNormalization's.

Usage (from the repository root):

    python benchmarks/transformer_normalization.py --backend all
    python benchmarks/transformer_normalization.py --quick --backend jax
    python benchmarks/transformer_normalization.py \
        --render-only benchmarks/results/transformer_normalization_cpu.jsonl
"""

import re
import statistics
import sys

from harness import cli
from harness import process
from harness import render as md
from harness import suite
from harness import timing

BACKENDS = ("tensorflow", "jax", "torch")
BATCH, TOKENS, WIDTH, HEADS = 32, 64, 128, 4
# --quick: (batch, tokens, width, heads).
QUICK_SIZES = (4, 8, 32, 4)


def _norms(keras, kb, heads=HEADS):
    L = kb.layers
    return {
        "LayerNormalization": lambda: keras.layers.LayerNormalization(),
        "BatchNormalization": lambda: keras.layers.BatchNormalization(),
        "PowerNormalization": lambda: L.PowerNormalization(
            warmup_steps=2, groups=heads
        ),
        "UnifiedNormalization": lambda: L.UnifiedNormalization(warmup_steps=2),
        "RepBatchNormalization": lambda: L.RepBatchNormalization(),
        "ProgressiveRepBN": lambda: L.ProgressiveRepBN(total_steps=2),
    }


def _model(keras, norm, tokens=TOKENS, width=WIDTH, heads=HEADS):
    inputs = keras.Input((tokens, width))
    h = norm()(inputs)
    h = keras.layers.MultiHeadAttention(heads, width // heads)(h, h)
    x = keras.layers.Add()([inputs, h])
    h = norm()(x)
    h = keras.layers.Dense(2 * width, activation="gelu")(h)
    h = keras.layers.Dense(width)(h)
    x = keras.layers.Add()([x, h])
    outputs = keras.layers.Dense(2)(norm()(x))
    return keras.Model(inputs, outputs)


def run_backend(args):
    """One backend: every variant compiled and trained past its warm-up,
    then timed round-robin."""
    import keras
    import numpy as np

    import keras_batchopt as kb

    batch, tokens, width, heads = (
        QUICK_SIZES if args.quick else (BATCH, TOKENS, WIDTH, HEADS)
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, tokens, width)).astype("float32")
    y = rng.normal(size=(batch, tokens, 2)).astype("float32")
    steps, predicts = {}, {}
    for name, norm in _norms(keras, kb, heads).items():
        if args.only and not re.search(args.only, name):
            continue
        keras.utils.set_random_seed(0)
        model = _model(keras, norm, tokens, width, heads)
        model.compile(keras.optimizers.SGD(1e-3), "mse", jit_compile="auto")
        for _ in range(4):  # compile, and pass the warmups (lambda = 0)
            model.train_on_batch(x, y)
        steps[name] = lambda m=model: m.train_on_batch(x, y)
        predicts[name] = lambda m=model: m.predict_on_batch(x)
        if name != "PowerNormalization" and name != "LayerNormalization":
            folded = kb.layers.fold_normalization(model)
            diff = float(
                np.abs(
                    np.asarray(folded.predict_on_batch(x))
                    - np.asarray(model.predict_on_batch(x))
                ).max()
            )
            assert diff < 1e-3, (name, diff)
            predicts[f"{name} folded"] = lambda m=folded: m.predict_on_batch(x)
    for fn in list(steps.values()) + list(predicts.values()):
        fn()
    times = {("train", k): [] for k in steps}
    times.update({("inference", k): [] for k in predicts})
    for _ in range(args.rounds):
        for kind, table in (("train", steps), ("inference", predicts)):
            for name, fn in table.items():
                times[(kind, name)].append(
                    timing.mean_call_ms(fn, args.calls) / 1e3
                )
    for (kind, name), values in times.items():
        process.emit(
            dict(
                backend=args.child,
                kind=kind,
                layer=name,
                seconds=statistics.median(values),
                runs=values,
                sizes=[batch, tokens, width, heads],
                device=args.device,
                repeat=args.repeat,
                calls=args.calls,
            )
        )


def _seconds(rows):
    """Median seconds per call: the rows' pooled rounds (rows written
    before the harness kept only `seconds`, one process per backend)."""
    if all("runs" in r for r in rows):
        return suite.pooled_median(rows)
    return rows[0]["seconds"]


def render(rows, keep_from=None):
    batch, tokens, width, heads = rows[0].get(
        "sizes", (BATCH, TOKENS, WIDTH, HEADS)
    )
    device = rows[0].get("device", "cpu")
    lines = md.header_lines(
        "Transformer block: training step and inference per normalization"
        + ("" if device == "cpu" else f", on {device.upper()}"),
        rows,
        keep_from,
    )
    lines += [
        "",
        f"Block: batch {batch}, {tokens} tokens, width {width}, {heads} "
        "heads, three norms per model (see the script's docstring). Median "
        "ms per Keras `train_on_batch` / `predict_on_batch`, ratio to "
        "LayerNormalization in the same process.",
        "",
    ]
    seconds = {
        key: _seconds(group)
        for key, group in suite.group(rows, "backend", "kind", "layer").items()
    }
    for kind in ("train", "inference"):
        lines += [
            f"## {'Training step' if kind == 'train' else 'Inference'}",
            "",
            "| layer | " + " | ".join(BACKENDS) + " |",
            "|---|" + "---|" * len(BACKENDS),
        ]
        names = []
        for r in rows:
            if r["kind"] == kind and r["layer"] not in names:
                names.append(r["layer"])
        for name in names:
            cells = []
            for backend in BACKENDS:
                value = seconds.get((backend, kind, name))
                base = seconds.get((backend, kind, "LayerNormalization"))
                if value is None or base is None:
                    cells.append("")
                    continue
                cells.append(f"{value * 1e3:.2f} ({value / base:.2f}x)")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _backends(args):
    return cli.device_backends(args, BACKENDS)


def run_suite(args, path):
    units = [(b, b) for b in _backends(args)]
    argv = cli.rounds_child_argv(__file__, args)
    return suite.run(args, path, units, argv)


def plan(args):
    sizes = QUICK_SIZES if args.quick else (BATCH, TOKENS, WIDTH, HEADS)
    return [
        f"transformer_normalization: {args.repeats} process(es) per backend "
        f"({', '.join(_backends(args))}), device {args.device}, (batch, "
        f"tokens, width, heads) {sizes}, {args.rounds} rounds of "
        f"{args.calls} calls per variant, norms matching "
        f"{args.only or 'any'}"
    ]


def parse(argv=None):
    return cli.parse_rounds(
        argv,
        __doc__.split("\n")[0],
        "transformer_normalization_{device}.jsonl",
        BACKENDS,
        rounds=5,
        calls=10,
        only_help="regex of norm names",
    )


def main(argv=None):
    args = parse(argv)
    if args.child:
        run_backend(args)
        return 0
    return cli.main(args, _backends(args), run_suite, render, plan)


if __name__ == "__main__":
    sys.exit(main())
