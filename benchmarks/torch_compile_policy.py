"""What the torch compile policy rests on, and what it gives a new user.

Two parts, each configuration in a fresh process:

1. **Per-variable break-even.** The Adan torch kernel on one flat float32
   variable of n elements, run eagerly and compiled (`torch.compile`,
   after its compilation), best of 5 rounds; and the first compiled call,
   which includes the compilation, with an empty Inductor cache. Where
   the eager kernel is as fast, "auto" never compiles (variables of at
   most `GROUP_MAX_NUMEL` elements).
2. **The README quickstart on torch** (digits MLP, 10 epochs, batch 32,
   `validation_split=0.2`): the wall time of `model.fit` in a fresh
   process with an empty Inductor cache, for Keras's Adam and for
   keras_batchopt's Adan in each compile mode ("auto", the default;
   "always", compiled from the first step; "never").

Usage (from the repository root):

    python benchmarks/torch_compile_policy.py
    python benchmarks/torch_compile_policy.py --quick
    python benchmarks/torch_compile_policy.py \\
        --render-only benchmarks/results/torch_compile_policy_cpu.jsonl
"""

import os
import sys
import tempfile
import time

from harness import cli
from harness import process
from harness import render as md

SIZES = (256, 4096, 32768, 131072, 524288, 2097152, 4194304)
QUICK_SIZES = (256, 32768)
QUICKSTART = ("keras Adam", "Adan auto", "Adan always", "Adan never")
ADAN_SCALARS = dict(
    clip=1.0,
    later=1.0,
    keep_1=0.98,
    keep_2=0.92,
    keep_3=0.99,
    step_m=1e-3,
    step_v=9e-4,
    bc3_sqrt=1.0,
    shrink=1.0,
    grow=1.0,
    beta_2=0.92,
    one_minus_beta_1=0.02,
    one_minus_beta_2=0.08,
    one_minus_beta_3=0.01,
    epsilon=1e-8,
)


def kernel_child(sizes):
    import torch

    from keras_batchopt.src.backend.torch import compile_utils
    from keras_batchopt.src.backend.torch.optimizers import torch_adan

    names = list(ADAN_SCALARS)
    values = compile_utils.scalars(
        list(ADAN_SCALARS.values()), torch.float32, "cpu"
    )
    scalars = dict(zip(names, values))

    def tensors(n):
        out = [torch.randn(n) for _ in range(6)]
        out[4].abs_()
        return out

    eager = torch_adan._kernel.get(False)
    compiled = torch_adan._kernel.get(True)
    start = time.perf_counter()
    compiled(*tensors(1000), **scalars)
    compile_s = time.perf_counter() - start
    for n in sizes:
        args = tensors(n)
        row = dict(part="kernel", n=n, first_compiled_call_s=compile_s)
        for name, kernel in (("eager", eager), ("compiled", compiled)):
            kernel(*args, **scalars)
            reps = max(10, int(4e6 // n))
            rounds = []
            for _ in range(5):
                start = time.perf_counter()
                for _ in range(reps):
                    kernel(*args, **scalars)
                rounds.append((time.perf_counter() - start) / reps * 1e6)
            row[f"{name}_us"] = min(rounds)
        process.emit(row)


def quickstart_child(which):
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
        keras_batchopt.config.set_torch_compile(which.split()[1])
        optimizer = keras_batchopt.optimizers.Adan(5e-3, weight_decay=0.02)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    ready = time.perf_counter()
    history = model.fit(x / 16.0, y, epochs=10, validation_split=0.2, verbose=0)
    process.emit(
        dict(
            part="quickstart",
            optimizer=which,
            fit_s=time.perf_counter() - ready,
            import_and_build_s=ready - start,
            val_accuracy=history.history["val_accuracy"][-1],
            eager_update_s=getattr(
                optimizer, "_torch_eager_update_seconds", None
            ),
        )
    )


def run(args, path):
    sizes = QUICK_SIZES if args.quick else SIZES
    repeats = 1 if args.quick else args.repeats
    failed = 0
    for _ in range(repeats):
        jobs = [["kernel", ",".join(map(str, sizes))]]
        jobs += [["quickstart", which] for which in QUICKSTART]
        for job in jobs:
            cache = tempfile.mkdtemp(prefix="inductor_")
            env = process.child_env(
                "torch", extra={"TORCHINDUCTOR_CACHE_DIR": cache}
            )
            rows, _ = process.run(
                [os.path.abspath(__file__), "--child", *job], env
            )
            failed += not rows
            context = process.context()
            md.append_rows(path, [dict(r, **context) for r in rows])
    return failed


def _median(values):
    values = sorted(values)
    return values[len(values) // 2]


def render(rows, keep_from=None):
    out = [
        *md.header_lines("The torch compile policy", rows, keep_from),
        "",
        "## Adan kernel on one variable of n elements (best of 5 rounds, "
        "median over processes)",
        "",
    ]
    kernel = [r for r in rows if r["part"] == "kernel"]
    table = []
    for n in sorted({r["n"] for r in kernel}):
        at_n = [r for r in kernel if r["n"] == n]
        eager = _median([r["eager_us"] for r in at_n])
        compiled = _median([r["compiled_us"] for r in at_n])
        table.append(
            [
                f"{n:,}",
                md.fmt(eager),
                md.fmt(compiled),
                md.fmt(eager / compiled, 2),
            ]
        )
    out += md.table(
        ["n", "eager (us)", "compiled (us)", "eager / compiled"], table
    )
    if kernel:
        first = _median([r["first_compiled_call_s"] for r in kernel])
        out += [
            "",
            f"First compiled call, empty Inductor cache: {first:.1f} s.",
            "",
        ]
    out += [
        "## README quickstart on torch, empty Inductor cache (median over "
        "processes)",
        "",
    ]
    quick = [r for r in rows if r["part"] == "quickstart"]
    baseline = _median(
        [r["fit_s"] for r in quick if r["optimizer"] == "keras Adam"]
        or [float("nan")]
    )
    table = []
    for which in QUICKSTART:
        runs = [r for r in quick if r["optimizer"] == which]
        if not runs:
            continue
        fit = _median([r["fit_s"] for r in runs])
        eager = _median([r["eager_update_s"] or 0.0 for r in runs])
        table.append(
            [
                which,
                str(len(runs)),
                md.fmt(fit, 2),
                md.fmt(fit / baseline, 2),
                md.fmt(eager, 2) if which.startswith("Adan") else "-",
                md.fmt(_median([r["val_accuracy"] for r in runs]), 3),
            ]
        )
    out += md.table(
        [
            "optimizer",
            "processes",
            "fit (s)",
            "x Keras Adam",
            "eager update time (s)",
            "val accuracy",
        ],
        table,
    )
    return "\n".join(out) + "\n"


def plan(args):
    sizes = QUICK_SIZES if args.quick else SIZES
    return [
        f"torch_compile_policy: kernel sizes {sizes}; quickstart with "
        f"{', '.join(QUICKSTART)}; each in a fresh process with an empty "
        "Inductor cache"
    ]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        if argv[1] == "kernel":
            kernel_child([int(n) for n in argv[2].split(",")])
        else:
            quickstart_child(argv[2])
        return 0
    p = cli.parser(
        __doc__.split("\n")[0], "torch_compile_policy_{device}.jsonl", repeats=3
    )
    args = p.parse_args(argv)
    if args.device != "cpu":
        p.error("--device: this script measures the CPU policy")
    return cli.main(args, ["torch"], run, render, plan)


if __name__ == "__main__":
    sys.exit(main())
