"""What the torch compile policy rests on: the per-variable break-even.

The Adan torch kernel on one flat float32 variable of n elements, run
eagerly and compiled (`torch.compile`, after its compilation), best of 5
rounds, in a fresh process with an empty Inductor cache; and the first
compiled call, which includes the compilation. Where the eager kernel is
as fast, "auto" never compiles (variables of at most `GROUP_MAX_NUMEL`
elements); the first call is what "auto" weighs the eager time against.
What the policy gives a new user: `quickstart_latency.py`.

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


def run(args, path):
    sizes = QUICK_SIZES if args.quick else SIZES
    repeats = 1 if args.quick else args.repeats
    failed = 0
    for _ in range(repeats):
        for job in [["kernel", ",".join(map(str, sizes))]]:
            cache = tempfile.mkdtemp(prefix="inductor_")
            env = process.child_env(
                "torch", extra={"TORCHINDUCTOR_CACHE_DIR": cache}
            )
            failed += process.run_and_append(
                [os.path.abspath(__file__), "--child", *job], env, path
            )
    return failed


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
        eager = md.median([r["eager_us"] for r in at_n])
        compiled = md.median([r["compiled_us"] for r in at_n])
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
        first = md.median([r["first_compiled_call_s"] for r in kernel])
        out += [
            "",
            f"First compiled call, empty Inductor cache: {first:.1f} s.",
            "",
        ]
    return "\n".join(out) + "\n"


def plan(args):
    sizes = QUICK_SIZES if args.quick else SIZES
    return [
        f"torch_compile_policy: Adan kernel at sizes {sizes}, in a fresh "
        "process with an empty Inductor cache"
    ]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        kernel_child([int(n) for n in argv[2].split(",")])
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
