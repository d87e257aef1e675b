"""How long the README quickstart takes a new user, per backend.

The quickstart (scikit-learn's digits, a 64-128-10 MLP, 10 epochs at
batch 32, `validation_split=0.2`) in a fresh process per configuration,
with empty compilation caches (a fresh Inductor cache on torch; JAX and
TensorFlow keep none across processes by default): the wall time of
`model.fit`, and of the imports and model building before it. On every
backend with Keras's Adam and with keras_batchopt's Adan (the
quickstart's optimizer, default settings); on torch also Adan with each
torch compile mode ("always": compiled from the first step, the policy
before "auto"; "never": eager kernels only).

Usage (from the repository root):

    python benchmarks/quickstart_latency.py
    python benchmarks/quickstart_latency.py --quick --backend torch
    python benchmarks/quickstart_latency.py \\
        --render-only benchmarks/results/quickstart_latency_cpu.jsonl
"""

import os
import sys
import tempfile
import time

from harness import cli
from harness import process
from harness import render as md

CASES = ("keras Adam", "Adan")
TORCH_CASES = ("Adan always", "Adan never")


def cases(backend):
    return CASES + (TORCH_CASES if backend == "torch" else ())


def child(which, epochs):
    start = time.perf_counter()
    import keras
    from sklearn.datasets import load_digits

    import keras_batchopt

    x, y = load_digits(return_X_y=True)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    if which == "keras Adam":
        optimizer = keras.optimizers.Adam(5e-3)
    else:
        if which != "Adan":
            keras_batchopt.config.set_torch_compile(which.split()[1])
        optimizer = keras_batchopt.optimizers.Adan(5e-3, weight_decay=0.02)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    ready = time.perf_counter()
    history = model.fit(
        x / 16.0, y, epochs=epochs, validation_split=0.2, verbose=0
    )
    process.emit(
        dict(
            backend=keras.backend.backend(),
            optimizer=which,
            epochs=epochs,
            fit_s=time.perf_counter() - ready,
            import_and_build_s=ready - start,
            val_accuracy=history.history["val_accuracy"][-1],
        )
    )


def run(args, path):
    epochs = 2 if args.quick else 10
    repeats = 1 if args.quick else args.repeats
    failed = 0
    for _ in range(repeats):
        for backend in cli.selected_backends(args):
            for which in cases(backend):
                cache = tempfile.mkdtemp(prefix="inductor_")
                env = process.child_env(
                    backend, extra={"TORCHINDUCTOR_CACHE_DIR": cache}
                )
                argv = [
                    os.path.abspath(__file__),
                    "--child",
                    which,
                    str(epochs),
                ]
                failed += process.run_and_append(argv, env, path)
    return failed


def render(rows, keep_from=None):
    out = [
        *md.header_lines("The README quickstart, per backend", rows, keep_from),
        "",
        "Fresh process per run, empty compilation caches; medians over "
        "the processes. `x Keras Adam`: Adan's `fit` time over Keras "
        "Adam's on the same backend.",
        "",
    ]
    table = []
    for backend in cli.BACKENDS:
        at = [r for r in rows if r["backend"] == backend]
        if not at:
            continue
        adam = [r["fit_s"] for r in at if r["optimizer"] == "keras Adam"]
        baseline = md.median(adam) if adam else float("nan")
        for which in cases(backend):
            runs = [r for r in at if r["optimizer"] == which]
            if not runs:
                continue
            fit = md.median([r["fit_s"] for r in runs])
            table.append(
                [
                    backend,
                    which,
                    str(len(runs)),
                    str(runs[0]["epochs"]),
                    md.fmt(md.median([r["import_and_build_s"] for r in runs])),
                    md.fmt(fit, 2),
                    md.fmt(fit / baseline, 2),
                    md.fmt(md.median([r["val_accuracy"] for r in runs]), 3),
                ]
            )
    out += md.table(
        [
            "backend",
            "optimizer",
            "processes",
            "epochs",
            "import + build (s)",
            "fit (s)",
            "x Keras Adam",
            "val accuracy",
        ],
        table,
    )
    return "\n".join(out) + "\n"


def plan(args):
    return [
        f"quickstart_latency: {backend}: {', '.join(cases(backend))}, each "
        "in a fresh process with empty caches"
        for backend in cli.selected_backends(args)
    ]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child(argv[1], int(argv[2]))
        return 0
    p = cli.parser(__doc__.split("\n")[0], "quickstart_latency_{device}.jsonl")
    args = p.parse_args(argv)
    if args.device != "cpu":
        p.error("--device: the quickstart is measured on the CPU")
    return cli.main(args, cli.selected_backends(args), run, render, plan)


if __name__ == "__main__":
    sys.exit(main())
