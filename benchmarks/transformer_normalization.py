"""Training-step and inference time of a small transformer block with each
normalization layer in its two pre-norm positions, next to Keras's
LayerNormalization and BatchNormalization, per backend, on CPU.

The block: tokens (batch 32, 64 tokens, width 128) -> norm ->
MultiHeadAttention(4 heads) -> residual -> norm -> Dense(256, gelu) ->
Dense(128) -> residual -> norm -> Dense(2). Each variant is a Keras model
compiled with SGD and run through Keras's own `train_on_batch` and
`predict_on_batch` (jit on TensorFlow and JAX, eager on torch, as Keras
runs them), so the numbers are what a user of `fit`/`predict` gets. The
"folded" rows are `keras_batchopt.layers.fold_normalization` of the
trained model: the norm after attention merges into the following Dense,
the others become `ChannelAffine` (attention input, classifier head).
Variants are timed round-robin (`--rounds` rounds of `--calls` calls) in
one process per backend; the median per call is reported with its ratio
to LayerNormalization's.

Usage (from the repository root):

    python benchmarks/transformer_normalization.py --backend all \
        --out benchmarks/results/transformer_normalization_cpu.jsonl
    python benchmarks/transformer_normalization.py \
        --table-only benchmarks/results/transformer_normalization_cpu.jsonl
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

from harness import render as md
from schedules_and_batch_tests import machine
from schedules_and_batch_tests import versions


def write_keeping_notes(text, path):
    return md.write(md.with_notes(text, path), path)


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")
BATCH, TOKENS, WIDTH, HEADS = 32, 64, 128, 4


def _norms(keras, kb):
    L = kb.layers
    return {
        "LayerNormalization": lambda: keras.layers.LayerNormalization(),
        "BatchNormalization": lambda: keras.layers.BatchNormalization(),
        "PowerNormalization": lambda: L.PowerNormalization(
            warmup_steps=2, groups=HEADS
        ),
        "UnifiedNormalization": lambda: L.UnifiedNormalization(warmup_steps=2),
        "RepBatchNormalization": lambda: L.RepBatchNormalization(),
        "ProgressiveRepBN": lambda: L.ProgressiveRepBN(total_steps=2),
    }


def _model(keras, norm):
    inputs = keras.Input((TOKENS, WIDTH))
    h = norm()(inputs)
    h = keras.layers.MultiHeadAttention(HEADS, WIDTH // HEADS)(h, h)
    x = keras.layers.Add()([inputs, h])
    h = norm()(x)
    h = keras.layers.Dense(2 * WIDTH, activation="gelu")(h)
    h = keras.layers.Dense(WIDTH)(h)
    x = keras.layers.Add()([x, h])
    outputs = keras.layers.Dense(2)(norm()(x))
    return keras.Model(inputs, outputs)


def _time(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def run_backend(backend, rounds, calls):
    os.environ["KERAS_BACKEND"] = backend
    import keras
    import numpy as np

    import keras_batchopt as kb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, TOKENS, WIDTH)).astype("float32")
    y = rng.normal(size=(BATCH, TOKENS, 2)).astype("float32")
    steps, predicts = {}, {}
    for name, norm in _norms(keras, kb).items():
        keras.utils.set_random_seed(0)
        model = _model(keras, norm)
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
    for _ in range(rounds):
        for kind, table in (("train", steps), ("inference", predicts)):
            for name, fn in table.items():
                times[(kind, name)].append(_time(fn, calls))
    rows = []
    for (kind, name), values in times.items():
        rows.append(
            dict(
                backend=backend,
                kind=kind,
                layer=name,
                seconds=statistics.median(values),
            )
        )
    return rows


def render(rows):
    meta = rows[0]
    lines = [
        "# Transformer block: training step and inference per normalization",
        "",
        f"Machine: {meta['machine']['cpu']}, {meta['machine']['cores']} "
        f"cores (CPU only). Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + f". Date: {meta['date']}.",
        "",
        f"Block: batch {BATCH}, {TOKENS} tokens, width {WIDTH}, {HEADS} "
        "heads, three norms per model (see the script's docstring). Median "
        "ms per Keras `train_on_batch` / `predict_on_batch`, ratio to "
        "LayerNormalization in the same process.",
        "",
    ]
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
                row = [
                    r
                    for r in rows
                    if r["backend"] == backend
                    and r["kind"] == kind
                    and r["layer"] == name
                ]
                base = [
                    r
                    for r in rows
                    if r["backend"] == backend
                    and r["kind"] == kind
                    and r["layer"] == "LayerNormalization"
                ]
                if not row or not base:
                    cells.append("")
                    continue
                ms = row[0]["seconds"] * 1e3
                ratio = row[0]["seconds"] / base[0]["seconds"]
                cells.append(f"{ms:.2f} ({ratio:.2f}x)")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="all")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--out", default=None)
    parser.add_argument("--table-only", default=None)
    parser.add_argument("--worker", action="store_true")
    args = parser.parse_args(argv)
    if args.table_only:
        with open(args.table_only) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        path = args.table_only.replace(".jsonl", ".md")
        print(write_keeping_notes(render(rows), path))
        return
    if args.worker:
        for row in run_backend(args.backend, args.rounds, args.calls):
            print("ROW " + json.dumps(row))
        return
    backends = BACKENDS if args.backend == "all" else (args.backend,)
    rows = []
    meta = dict(
        machine=machine(),
        versions=versions(),
        date=datetime.date.today().isoformat(),
    )
    for backend in backends:
        out = subprocess.run(
            [sys.executable, __file__, "--worker", "--backend", backend]
            + ["--rounds", str(args.rounds), "--calls", str(args.calls)],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            env=dict(os.environ, KERAS_BACKEND=backend),
        )
        if out.returncode:
            print(out.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"{backend} failed")
        for line in out.stdout.splitlines():
            if line.startswith("ROW "):
                rows.append(dict(json.loads(line[4:]), **meta))
    if args.out:
        with open(args.out, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        print(
            write_keeping_notes(render(rows), args.out.replace(".jsonl", ".md"))
        )
    else:
        print(render(rows))


if __name__ == "__main__":
    main()
