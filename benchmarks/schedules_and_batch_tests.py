"""Schedule overhead in a compiled `fit` step, and the cost of AdAdaGrad's
per-sample-gradient batch-size tests, side by side, per backend, on CPU.

Part 1 (schedules): the same model is compiled once per learning-rate
configuration (a constant float, then each `keras_batchopt.schedules`
schedule, plus Keras's `CosineDecay` for reference) and trained with
`model.fit` for `--steps` steps per timing; the configurations are
interleaved `--repeats` times in one process and the median time per step is
reported next to the constant learning rate's.

Part 2 (batch-size tests): for the same models, the time of one
`gradient_statistics` call (per-sample gradients of the batch plus the four
statistics; what `AdaptiveBatchSize` runs every `test_interval` steps) on
the training batch, against the time of one training step of that batch.

Every backend runs in its own subprocess. Usage (from the repository root):

    python benchmarks/schedules_and_batch_tests.py --backend all \
        --out benchmarks/results/schedules_batch_tests_cpu.jsonl
    python benchmarks/schedules_and_batch_tests.py \
        --table-only benchmarks/results/schedules_batch_tests_cpu.jsonl
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")
BATCH = 128


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


def _learning_rates(keras, total):
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
            tokens_per_step=BATCH,
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


def child(backend, kind, steps, repeats):
    import keras
    import numpy as np

    from keras_batchopt.src.batch_size.per_sample import StatisticsFunction

    rng = np.random.default_rng(0)
    shape = (784,) if kind == "mlp" else (28, 28, 1)
    x = rng.standard_normal((steps * BATCH,) + shape).astype("float32")
    y = rng.integers(0, 10, steps * BATCH)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    total = 100 * steps * (repeats + 1)
    models = {}
    for name, lr in _learning_rates(keras, total).items():
        keras.utils.set_random_seed(0)
        model = _model(keras, kind)
        model.compile(optimizer=keras.optimizers.AdamW(lr), loss=loss)
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)  # compile
        models[name] = model
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(
                x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False
            )
            times[name].append((time.perf_counter() - start) / steps * 1e3)
    rows = []
    for name, ts in times.items():
        rows.append(
            dict(part="schedule", lr=name, ms=statistics.median(ts), runs=ts)
        )
    # Part 2: per-sample statistics vs one training step, same batch.
    model = models["constant"]
    step_ms = statistics.median(times["constant"])
    for test_batch in (64, BATCH):
        fn = StatisticsFunction(model, loss)
        fn(x[:test_batch], y[:test_batch])  # compile
        ts = []
        for _ in range(max(5, repeats)):
            start = time.perf_counter()
            fn(x[:test_batch], y[:test_batch])
            ts.append((time.perf_counter() - start) * 1e3)
        rows.append(
            dict(
                part="batch_test",
                test_batch=test_batch,
                ms=statistics.median(ts),
                runs=ts,
                train_step_ms=step_ms,
            )
        )
    # Part 3: whole fit steps with the growing-batch pipeline: arrays (the
    # baseline), AdaptiveBatchDataset alone, and with AdaptiveBatchSize
    # testing every 10 steps (a tolerance so loose that the batch never
    # grows, so every configuration trains the same batches).
    from keras_batchopt import batch_size as bs

    def fit_arrays():
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)

    # One dataset and one callback per configuration for all timed fits,
    # as in one long training run (the callback compiles its statistics
    # function once, at its first fit).
    plain = bs.AdaptiveBatchDataset(x, y, batch_size=BATCH, seed=0)
    tested = bs.AdaptiveBatchDataset(x, y, batch_size=BATCH, seed=0)
    callback = bs.AdaptiveBatchSize(
        tested, eta=1e6, test_interval=10, max_test_batch_size=BATCH
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
        row.update(backend=backend, model=kind, batch=BATCH, steps=steps)
    return rows


def versions():
    import importlib.metadata as md

    out = {}
    for name in ("keras", "tensorflow-cpu", "jax", "jaxlib", "torch", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def machine():
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return dict(cpu=cpu, cores=os.cpu_count(), python=platform.python_version())


def table(rows):
    lines = []
    meta = rows[0].get("meta", {})
    lines.append(f"Machine: {meta.get('machine')}  ")
    lines.append(f"Versions: {meta.get('versions')}  ")
    lines.append(f"Commit: {meta.get('commit')}, {meta.get('date')}")
    lines.append("")
    lines.append("### Fit step with each learning-rate schedule (AdamW)")
    lines.append("")
    lines.append(
        "| backend | model | learning rate | ms/step (median) | vs constant "
        "| ms/step (min) | min vs constant |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for backend in BACKENDS:
        for kind in ("mlp", "cnn"):
            sel = [
                r
                for r in rows
                if r["backend"] == backend
                and r["model"] == kind
                and r["part"] == "schedule"
            ]
            if not sel:
                continue
            base = next(r["ms"] for r in sel if r["lr"] == "constant")
            low = next(min(r["runs"]) for r in sel if r["lr"] == "constant")
            for r in sel:
                lines.append(
                    f"| {backend} | {kind} | {r['lr']} | {r['ms']:.2f} | "
                    f"{r['ms'] / base:.3f} | {min(r['runs']):.2f} | "
                    f"{min(r['runs']) / low:.3f} |"
                )
    lines.append("")
    lines.append("### Per-sample-gradient batch-size test vs a training step")
    lines.append("")
    lines.append(
        "| backend | model | test batch | test ms | train step ms "
        f"(batch {BATCH}) | ratio |"
    )
    lines.append("|---|---|---|---|---|---|")
    for r in rows:
        if r["part"] != "batch_test":
            continue
        lines.append(
            f"| {r['backend']} | {r['model']} | {r['test_batch']} | "
            f"{r['ms']:.2f} | {r['train_step_ms']:.2f} | "
            f"{r['ms'] / r['train_step_ms']:.2f} |"
        )
    lines.append("")
    lines.append("### Whole fit step with the growing-batch pipeline")
    lines.append("")
    lines.append("| backend | model | input | ms/step (median) | vs arrays |")
    lines.append("|---|---|---|---|---|")
    for backend in BACKENDS:
        for kind in ("mlp", "cnn"):
            sel = [
                r
                for r in rows
                if r["backend"] == backend
                and r["model"] == kind
                and r["part"] == "pipeline"
            ]
            if not sel:
                continue
            base = next(r["ms"] for r in sel if r["config"] == "arrays")
            for r in sel:
                lines.append(
                    f"| {backend} | {kind} | {r['config']} | {r['ms']:.2f} | "
                    f"{r['ms'] / base:.3f} |"
                )
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="all")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out")
    parser.add_argument("--table-only")
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    if args.child:
        rows = child(args.child[0], args.child[1], args.steps, args.repeats)
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
        for kind in ("mlp", "cnn"):
            env = dict(
                os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3"
            )
            result = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    backend,
                    kind,
                    "--steps",
                    str(args.steps),
                    "--repeats",
                    str(args.repeats),
                ],
                env=env,
                capture_output=True,
                text=True,
                cwd=REPO_ROOT,
            )
            found = [
                ln
                for ln in result.stdout.splitlines()
                if ln.startswith("ROWS ")
            ]
            if result.returncode or not found:
                print(result.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{backend}/{kind} failed")
            for row in json.loads(found[0][5:]):
                row["meta"] = meta
                rows.append(row)
            print(f"{backend}/{kind} done", file=sys.stderr)
    if args.out:
        with open(args.out, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
            f.write(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
