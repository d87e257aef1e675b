"""Overhead of hard mini-batch selection on an epoch, and of
NormalizeAndProject on an optimizer step, per backend, on CPU.

Part 1 (hard batches): one epoch of `model.fit` on arrays (`shuffle=False`,
the baseline) against the same number of steps on a `HardBatchDataset`
(`delta=0.5`, past its warm-up epoch) with its `HardBatchSelection`
callback. Target: at most 5% more time per epoch.

Part 2 (NaP): a `fit` step of a LayerNorm MLP with Keras's Adam against the
same step with `NormalizeAndProject(Adam)`. Target: at most 1.2x.

Every configuration is set up once per backend process and the timed
`fit` calls are interleaved `--rounds` times (`harness.suite`).
Usage (from the repository root):

    python benchmarks/strategies_overhead.py --backend all
    python benchmarks/strategies_overhead.py --quick --backend jax
    python benchmarks/strategies_overhead.py \
        --render-only benchmarks/results/strategies_overhead_cpu.jsonl
"""

import argparse
import statistics
import sys
import time

from harness import cli
from harness import process
from harness import render as md
from harness import suite

BACKENDS = ("tensorflow", "jax", "torch")
BATCH = 128
QUICK_BATCH = 16


def _mlp(keras, normalized):
    layers = [keras.Input((784,))]
    for units in (512, 512):
        layers.append(keras.layers.Dense(units, use_bias=not normalized))
        if normalized:
            layers.append(keras.layers.LayerNormalization())
        layers.append(keras.layers.Activation("relu"))
    layers.append(keras.layers.Dense(10, name="head"))
    return keras.Sequential(layers)


def _configs(keras, x, y, batch):
    """{part: {name: a function that runs one timed fit}}."""
    from keras_batchopt import optimizers
    from keras_batchopt import strategies

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def compiled(normalized, optimizer):
        keras.utils.set_random_seed(0)
        model = _mlp(keras, normalized)
        model.compile(optimizer=optimizer, loss=loss)
        return model

    plain = compiled(False, keras.optimizers.SGD(0.01, momentum=0.9))
    hard = compiled(False, keras.optimizers.SGD(0.01, momentum=0.9))
    data = strategies.HardBatchDataset(x, y, batch_size=batch, delta=0.5)
    selection = strategies.HardBatchSelection(data)
    adam = compiled(True, keras.optimizers.Adam(1e-3))
    nap = compiled(
        True,
        optimizers.NormalizeAndProject(
            keras.optimizers.Adam(1e-3), exclude=["head"]
        ),
    )
    fit = dict(epochs=1, verbose=0)
    return {
        "hard_batch": {
            "arrays": lambda: plain.fit(
                x, y, batch_size=batch, shuffle=False, **fit
            ),
            "HardBatchDataset(delta=0.5) + HardBatchSelection": lambda: (
                hard.fit(data, callbacks=[selection], **fit)
            ),
        },
        "nap": {
            "Adam": lambda: adam.fit(x, y, batch_size=batch, **fit),
            "NormalizeAndProject(Adam)": lambda: nap.fit(
                x, y, batch_size=batch, **fit
            ),
        },
    }


def child(backend, steps, rounds, batch=BATCH):
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((steps * batch, 784)).astype("float32")
    y = rng.integers(0, 10, steps * batch)
    parts = _configs(keras, x, y, batch)
    runs = [(p, n, f) for p, c in parts.items() for n, f in c.items()]
    for _, _, run in runs:
        run()  # compile; the hard-batch dataset does its warm-up epoch
    times = {(p, n): [] for p, n, _ in runs}
    for _ in range(rounds):
        for part, name, run in runs:
            start = time.perf_counter()
            run()
            times[part, name].append((time.perf_counter() - start) * 1e3)
    return [
        dict(
            part=part,
            config=name,
            ms=statistics.median(ts) / steps,
            runs=[t / steps for t in ts],
            backend=backend,
            batch=batch,
            steps=steps,
        )
        for (part, name), ts in times.items()
    ]


TITLES = {
    "hard_batch": "Hard mini-batch selection: fit step, SGD, MLP (target "
    "<= 1.05)",
    "nap": "NormalizeAndProject: fit step, LayerNorm MLP (target <= 1.2)",
}


def _lines(rows, part):
    lines = [
        f"### {TITLES[part]}",
        "",
        "| backend | configuration | ms/step (median) | vs baseline "
        "| ms/step (min) | min vs baseline |",
        "|---|---|---|---|---|---|",
    ]
    groups = suite.group(
        [r for r in rows if r["part"] == part], "backend", "config"
    )
    for backend in BACKENDS:
        sel = {k[1]: g for k, g in groups.items() if k[0] == backend}
        if not sel:
            continue
        base_name = next(iter(sel))
        base = suite.pooled_median(sel[base_name])
        low = min(v for r in sel[base_name] for v in r["runs"])
        for config, group in sel.items():
            ms = suite.pooled_median(group)
            lowest = min(v for r in group for v in r["runs"])
            lines.append(
                f"| {backend} | {config} | {ms:.3f} | {ms / base:.3f} | "
                f"{lowest:.3f} | {lowest / low:.3f} |"
            )
    return lines


def render(rows, keep_from=None):
    lines = md.header_lines(
        "Hard mini-batch selection and NormalizeAndProject overhead",
        rows,
        keep_from,
    )
    lines += [
        f"- batch {rows[0]['batch']}, {rows[0]['steps']} steps per timed "
        "`fit`; medians over the rounds of every process",
        "",
        *_lines(rows, "hard_batch"),
        "",
        *_lines(rows, "nap"),
    ]
    return "\n".join(lines) + "\n"


def _units(args):
    return [(b, b) for b in cli.selected_backends(args, BACKENDS)]


def run_suite(args, path):
    def argv(backend, label, repeat):
        out = [__file__, "--child", backend]
        out += ["--steps", str(args.steps), "--rounds", str(args.rounds)]
        return out + ["--repeat", str(repeat)] + (["--quick"] * args.quick)

    return suite.run(args, path, _units(args), argv)


def plan(args):
    batch = QUICK_BATCH if args.quick else BATCH
    return [
        f"strategies_overhead: {args.repeats} process(es) per backend: "
        f"{', '.join(label for _, label in _units(args))}; batch {batch}, "
        f"{args.steps} steps per fit, {args.rounds} rounds"
    ]


def parse(argv=None):
    p = cli.parser(
        __doc__.split("\n")[0],
        "strategies_overhead_{device}.jsonl",
        backends=BACKENDS,
        repeats=1,
    )
    p.add_argument("--steps", type=int, default=64)
    p.add_argument(
        "--rounds", type=int, default=9, help="interleaved rounds per process"
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--repeat", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.steps, args.rounds, args.max_wait = 1, 4, 1, 0.0
    if args.device != "cpu":
        p.error("--device: this benchmark runs on the CPU only")
    return args


def main(argv=None):
    args = parse(argv)
    if args.child:
        batch = QUICK_BATCH if args.quick else BATCH
        for row in child(args.child, args.steps, args.rounds, batch):
            process.emit(dict(row, repeat=args.repeat))
        return 0
    return cli.main(args, _units(args), run_suite, render, plan)


if __name__ == "__main__":
    sys.exit(main())
