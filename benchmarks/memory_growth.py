"""Resident memory over consecutive small compile/fit runs in one process.

A notebook that sweeps learning rates builds, compiles and fits a fresh
model again and again in one process. Each run here does that with a
small MLP (64 -> 128 -> 10, 256 samples, one epoch) and one of the
package's optimizers (cycling through all seven, AdaHessian with its
Hessian training step), deletes the model and collects garbage. The row
records the resident set size (RSS, from /proc/self/statm) after the
warm-up runs and after the last run: what a leak adds grows with the
number of runs, what the frameworks cache once does not. Keras's Adam
runs the same loop as the baseline. On TensorFlow a third loop runs the
package's optimizers with their fast path off (`config.disable_fast_paths()`,
Keras's generic update in the traced step), which tells the XLA-compiled
update's share of the growth from the rest.

Usage (from the repository root):

    python benchmarks/memory_growth.py                   # 50 runs, all
    python benchmarks/memory_growth.py --quick           # 8 runs
    python benchmarks/memory_growth.py \\
        --render-only benchmarks/results/memory_growth_cpu.jsonl
"""

import gc
import os
import sys

from harness import cli
from harness import process
from harness import render as md

RUNS, WARMUP = 50, 5
QUICK_RUNS, QUICK_WARMUP = 8, 2
OPTIMIZERS = (
    "Adan",
    "Lamb",
    "Lars",
    "SGDSaI",
    "SinkGD",
    "AdaGradNorm",
    "AdaHessian",
)
# Pass or fail of the package's leak budget for 50 runs.
BUDGET_MB = 50.0
# The loops a process runs: what each row's `loop` column says.
LOOPS = {
    "adam": "Keras Adam",
    "package": "keras_batchopt (all seven)",
    "package_generic": "keras_batchopt (all seven), fast paths off",
}


def rss_mb():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def one_run(keras, keras_batchopt, name, x, y):
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    if name == "keras Adam":
        optimizer = keras.optimizers.Adam(1e-3)
    else:
        optimizer = getattr(keras_batchopt.optimizers, name)(1e-3)
        if name == "AdaHessian":
            keras_batchopt.curvature.enable_hessian_training(model)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    del model, optimizer
    gc.collect()


def child(loop, runs, warmup):
    """In the child process: `runs` runs of `loop`; emits one row."""
    import keras
    import numpy as np

    import keras_batchopt

    if loop == "package_generic":
        keras_batchopt.config.disable_fast_paths()

    rng = np.random.RandomState(0)
    x = rng.randn(256, 64).astype("float32")
    y = rng.randint(0, 10, 256)
    names = ["keras Adam"] if loop == "adam" else list(OPTIMIZERS)
    after_warmup = None
    for i in range(runs):
        one_run(keras, keras_batchopt, names[i % len(names)], x, y)
        if i + 1 == warmup:
            after_warmup = rss_mb()
    process.emit(
        dict(
            backend=keras.backend.backend(),
            loop=LOOPS[loop],
            runs=runs,
            warmup=warmup,
            rss_after_warmup_mb=after_warmup,
            rss_after_runs_mb=rss_mb(),
        )
    )


def run(args, path):
    runs, warmup = (QUICK_RUNS, QUICK_WARMUP) if args.quick else (RUNS, WARMUP)
    failed = 0
    for backend in cli.selected_backends(args):
        loops = ["adam", "package"]
        if backend == "tensorflow":
            loops.append("package_generic")
        for loop in loops:
            argv = [
                os.path.abspath(__file__),
                "--child",
                loop,
                str(runs),
                str(warmup),
            ]
            env = process.child_env(backend)
            failed += process.run_and_append(argv, env, path)
    return failed


def render(rows, keep_from=None):
    out = [
        *md.header_lines(
            "Resident memory over consecutive compile/fit runs", rows, keep_from
        ),
        "",
        "Each run: a fresh 64-128-10 MLP, compile, fit one epoch of 256 "
        "samples, `del`, `gc.collect()`. Growth = RSS after the last run "
        f"minus RSS after the warm-up runs; budget {BUDGET_MB:.0f} MB over "
        f"{RUNS} runs.",
        "",
    ]
    table_rows = []
    for r in rows:
        growth = r["rss_after_runs_mb"] - r["rss_after_warmup_mb"]
        per_run = growth / max(1, r["runs"] - r["warmup"])
        table_rows.append(
            [
                r["backend"],
                r["loop"],
                str(r["runs"]),
                md.fmt(r["rss_after_warmup_mb"]),
                md.fmt(r["rss_after_runs_mb"]),
                md.fmt(growth),
                md.fmt(per_run, 2),
                "yes" if growth <= BUDGET_MB else "**no**",
            ]
        )
    columns = [
        "backend",
        "loop",
        "runs",
        "RSS after warm-up (MB)",
        "RSS after runs (MB)",
        "growth (MB)",
        "MB per run",
        f"<= {BUDGET_MB:.0f} MB",
    ]
    out += md.table(columns, table_rows)
    return "\n".join(out) + "\n"


def plan(args):
    runs = QUICK_RUNS if args.quick else RUNS
    return [
        f"memory_growth: {backend}, one process for Keras Adam and one for "
        f"the package's optimizers (on tensorflow one more, fast paths "
        f"off), {runs} runs each"
        for backend in cli.selected_backends(args)
    ]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        loop, runs, warmup = argv[1], int(argv[2]), int(argv[3])
        child(loop, runs, warmup)
        return 0
    p = cli.parser(__doc__.split("\n")[0], "memory_growth_{device}.jsonl")
    args = p.parse_args(argv)
    if args.device != "cpu":
        p.error("--device: this script measures host memory on the CPU")
    return cli.main(args, cli.selected_backends(args), run, render, plan)


if __name__ == "__main__":
    sys.exit(main())
