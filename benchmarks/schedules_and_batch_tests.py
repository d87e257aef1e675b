"""Schedule overhead in a compiled `fit` step, and the cost of AdAdaGrad's
per-sample-gradient batch-size tests, side by side, per backend, on CPU.

Part 1 (schedules): the same model is compiled once per learning-rate
configuration (a constant float, then each `keras_batchopt.schedules`
schedule, plus Keras's `CosineDecay` for reference) and trained with
`model.fit` for `--steps` steps per timing; the configurations are
interleaved `--rounds` times in one process and the median time per step
is reported next to the constant learning rate's.

Part 2 (batch-size tests): for the same models, the time of one
`gradient_statistics` call (per-sample gradients of the batch plus the four
statistics; what `AdaptiveBatchSize` runs every `test_interval` steps) on
the training batch, against the time of one training step of that batch;
once with the Dense layers' statistics from their inputs and output
gradients (the default) and once from formed per-sample gradients
(`keras_batchopt.config.fast_paths(False)`), interleaved.

Part 3 (pipeline): whole `fit` steps on arrays, on an
`AdaptiveBatchDataset`, and on the dataset with `AdaptiveBatchSize`.

Every (backend, model) runs in its own subprocess (`harness.suite`).
Usage (from the repository root):

    python benchmarks/schedules_and_batch_tests.py --backend all
    python benchmarks/schedules_and_batch_tests.py --quick --backend jax
    python benchmarks/schedules_and_batch_tests.py \
        --render-only benchmarks/results/schedules_batch_tests_cpu.jsonl
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
MODELS = ("mlp", "cnn")
BATCH = 128
QUICK_BATCH = 16


def _model(keras, kind):
    if kind == "mlp":
        layers = [
            keras.Input((784,)),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(10),
        ]
    else:
        layers = [
            keras.Input((28, 28, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    return keras.Sequential(layers)


def _learning_rates(keras, total, batch=BATCH):
    from keras_batchopt import schedules

    return {
        "constant": 1e-3,
        "keras CosineDecay": keras.optimizers.schedules.CosineDecay(
            1e-3, total, warmup_target=2e-3, warmup_steps=total // 10
        ),
        "WarmupStableDecay": schedules.WarmupStableDecay(
            1e-3, warmup_steps=0.1, decay_steps=0.2, total_steps=total
        ),
        "PowerSchedule": schedules.PowerSchedule(
            max_learning_rate=1e-3,
            a=0.5,
            tokens_per_step=batch,
            warmup_steps=total // 10,
            decay_steps=0.1,
            total_steps=total,
        ),
        "InfiniteSchedule": schedules.InfiniteSchedule(
            1e-3,
            3e-4,
            total // 10,
            total // 5,
            annealing_start=total // 2,
            annealing_steps=total // 10,
        ),
        "GradualWarmup(WSD)": schedules.GradualWarmup(
            schedules.WarmupStableDecay(
                1e-3, 0, total // 5, stable_steps=total
            ),
            warmup_steps=total // 10,
        ),
    }


def child(backend, kind, steps, repeats, batch=BATCH):
    """One backend and model: the three parts, each round-robin."""
    import keras
    import numpy as np

    from keras_batchopt.src.batch_size.per_sample import StatisticsFunction

    rng = np.random.default_rng(0)
    shape = (784,) if kind == "mlp" else (28, 28, 1)
    x = rng.standard_normal((steps * batch,) + shape).astype("float32")
    y = rng.integers(0, 10, steps * batch)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    total = 100 * steps * (repeats + 1)
    models = {}
    for name, lr in _learning_rates(keras, total, batch).items():
        keras.utils.set_random_seed(0)
        model = _model(keras, kind)
        model.compile(optimizer=keras.optimizers.AdamW(lr), loss=loss)
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)  # compile
        models[name] = model
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(
                x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False
            )
            times[name].append((time.perf_counter() - start) / steps * 1e3)
    rows = []
    for name, ts in times.items():
        rows.append(
            dict(part="schedule", lr=name, ms=statistics.median(ts), runs=ts)
        )
    # Part 2: per-sample statistics vs one training step, same batch, with
    # the Dense layers' statistics from their inputs and output gradients
    # ("Dense taps", the default) and from formed per-sample gradients
    # (fast paths off), interleaved.
    from keras_batchopt import config

    model = models["constant"]
    step_ms = statistics.median(times["constant"])
    paths = {"Dense taps": True, "per-sample gradients": False}
    for test_batch in (batch // 2, batch):
        fn = StatisticsFunction(model, loss)
        for fast in paths.values():
            with config.fast_paths(fast):
                fn(x[:test_batch], y[:test_batch])  # compile
        ts = {path: [] for path in paths}
        for _ in range(max(5, repeats)):
            for path, fast in paths.items():
                with config.fast_paths(fast):
                    start = time.perf_counter()
                    fn(x[:test_batch], y[:test_batch])
                    ts[path].append((time.perf_counter() - start) * 1e3)
        for path, runs in ts.items():
            rows.append(
                dict(
                    part="batch_test",
                    test_batch=test_batch,
                    path=path,
                    ms=statistics.median(runs),
                    runs=runs,
                    train_step_ms=step_ms,
                )
            )
    # Part 3: whole fit steps with the growing-batch pipeline: arrays (the
    # baseline), AdaptiveBatchDataset alone, and with AdaptiveBatchSize
    # testing every 10 steps (a tolerance so loose that the batch never
    # grows, so every configuration trains the same batches).
    from keras_batchopt import batch_size as bs

    def fit_arrays():
        model.fit(x, y, batch_size=batch, epochs=1, verbose=0, shuffle=False)

    # One dataset and one callback per configuration for all timed fits,
    # as in one long training run (the callback compiles its statistics
    # function once, at its first fit).
    plain = bs.AdaptiveBatchDataset(x, y, batch_size=batch, seed=0)
    tested = bs.AdaptiveBatchDataset(x, y, batch_size=batch, seed=0)
    callback = bs.AdaptiveBatchSize(
        tested, eta=1e6, test_interval=10, max_test_batch_size=batch
    )

    pipeline = {
        "arrays": fit_arrays,
        "AdaptiveBatchDataset": lambda: model.fit(plain, epochs=1, verbose=0),
        "+ AdaptiveBatchSize(test_interval=10)": lambda: model.fit(
            tested, epochs=1, verbose=0, callbacks=[callback]
        ),
    }
    for run in pipeline.values():
        run()  # compile, build the statistics function
    pipe_times = {name: [] for name in pipeline}
    for _ in range(repeats):
        for name, run in pipeline.items():
            start = time.perf_counter()
            run()
            pipe_times[name].append((time.perf_counter() - start) / steps * 1e3)
    for name, ts in pipe_times.items():
        rows.append(
            dict(
                part="pipeline", config=name, ms=statistics.median(ts), runs=ts
            )
        )
    for row in rows:
        row.update(backend=backend, model=kind, batch=batch, steps=steps)
    return rows


def _ms(rows):
    return suite.pooled_median(rows)


def _schedule_lines(rows):
    lines = [
        "### Fit step with each learning-rate schedule (AdamW)",
        "",
        "| backend | model | learning rate | ms/step (median) | vs constant "
        "| ms/step (min) | min vs constant |",
        "|---|---|---|---|---|---|---|",
    ]
    groups = suite.group(
        [r for r in rows if r["part"] == "schedule"], "backend", "model", "lr"
    )
    for backend in BACKENDS:
        for kind in MODELS:
            sel = {
                k[2]: g for k, g in groups.items() if k[:2] == (backend, kind)
            }
            if not sel:
                continue
            base = _ms(sel["constant"])
            low = min(v for r in sel["constant"] for v in r["runs"])
            for lr, group in sel.items():
                ms = _ms(group)
                lowest = min(v for r in group for v in r["runs"])
                lines.append(
                    f"| {backend} | {kind} | {lr} | {ms:.2f} | "
                    f"{ms / base:.3f} | {lowest:.2f} | {lowest / low:.3f} |"
                )
    return lines


def _batch_test_lines(rows, batch):
    """One row per test; the "statistics from" column only for rows that
    record it (rows measured before the Dense taps have none)."""
    selected = [r for r in rows if r["part"] == "batch_test"]
    with_path = any("path" in r for r in selected)
    column = "statistics from | " if with_path else ""
    lines = [
        "### Per-sample-gradient batch-size test vs a training step",
        "",
        f"| backend | model | test batch | {column}test ms | train step ms "
        f"(batch {batch}) | ratio |",
        "|---|---|---|---|---|---|" + ("---|" if with_path else ""),
    ]
    for r in selected:
        r.setdefault("path", "per-sample gradients")
    groups = suite.group(selected, "backend", "model", "test_batch", "path")
    for (backend, kind, test_batch, path), group in groups.items():
        ms = _ms(group)
        step = statistics.median(r["train_step_ms"] for r in group)
        cell = f"{path} | " if with_path else ""
        lines.append(
            f"| {backend} | {kind} | {test_batch} | {cell}{ms:.2f} | "
            f"{step:.2f} | {ms / step:.2f} |"
        )
    return lines


def _pipeline_lines(rows):
    lines = [
        "### Whole fit step with the growing-batch pipeline",
        "",
        "| backend | model | input | ms/step (median) | vs arrays |",
        "|---|---|---|---|---|",
    ]
    groups = suite.group(
        [r for r in rows if r["part"] == "pipeline"],
        "backend",
        "model",
        "config",
    )
    for backend in BACKENDS:
        for kind in MODELS:
            sel = {
                k[2]: g for k, g in groups.items() if k[:2] == (backend, kind)
            }
            if not sel:
                continue
            base = _ms(sel["arrays"])
            for config, group in sel.items():
                ms = _ms(group)
                lines.append(
                    f"| {backend} | {kind} | {config} | {ms:.2f} | "
                    f"{ms / base:.3f} |"
                )
    return lines


def render(rows, keep_from=None):
    """The three tables; medians over the rounds of every process."""
    batch = rows[0]["batch"]
    lines = md.header_lines(
        "Schedules in a compiled fit step, and AdAdaGrad's batch-size tests",
        rows,
        keep_from,
    )
    lines += [
        f"- AdamW, batch {batch}, {rows[0]['steps']} steps per timed `fit`; "
        "medians over the rounds of every process",
        "",
        *_schedule_lines(rows),
        "",
        *_batch_test_lines(rows, batch),
        "",
        *_pipeline_lines(rows),
    ]
    return "\n".join(lines) + "\n"


def _units(args):
    backends = cli.selected_backends(args, BACKENDS)
    return [(b, f"{b}/{kind}") for b in backends for kind in MODELS]


def run_suite(args, path):
    def argv(backend, label, repeat):
        out = [__file__, "--child", backend, label.split("/")[1]]
        out += ["--steps", str(args.steps), "--rounds", str(args.rounds)]
        return out + ["--repeat", str(repeat)] + (["--quick"] * args.quick)

    return suite.run(args, path, _units(args), argv)


def plan(args):
    batch = QUICK_BATCH if args.quick else BATCH
    return [
        f"schedules_and_batch_tests: {args.repeats} process(es) per "
        f"(backend, model): {', '.join(label for _, label in _units(args))}; "
        f"batch {batch}, {args.steps} steps per fit, {args.rounds} rounds"
    ]


def parse(argv=None):
    p = cli.parser(
        __doc__.split("\n")[0],
        "schedules_batch_tests_{device}.jsonl",
        backends=BACKENDS,
        repeats=1,
    )
    p.add_argument("--steps", type=int, default=50)
    p.add_argument(
        "--rounds", type=int, default=9, help="interleaved rounds per process"
    )
    p.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    p.add_argument("--repeat", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.steps, args.rounds, args.max_wait = 1, 2, 1, 0.0
    if args.device != "cpu":
        p.error("--device: this benchmark runs on the CPU only")
    return args


def main(argv=None):
    args = parse(argv)
    if args.child:
        batch = QUICK_BATCH if args.quick else BATCH
        backend, kind = args.child
        for row in child(backend, kind, args.steps, args.rounds, batch):
            process.emit(dict(row, repeat=args.repeat))
        return 0
    return cli.main(args, _units(args), run_suite, render, plan)


if __name__ == "__main__":
    sys.exit(main())
