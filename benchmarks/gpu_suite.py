"""The optimizer-step suite on one CUDA GPU, within about 8 minutes.

Runs, one after the other, each with `--device cuda` (the floor is a
device copy; the tables report its achieved HBM bandwidth) on the JAX and
torch backends (the environment has tensorflow-cpu only):

1. `optimizer_step.py`, every Adan, Lamb and Lars row, 1 repeat of 30
   steps -> benchmarks/results/optimizer_step_gpu.md
2. `optimizer_step_sgd_sai_sink_gd.py`, 1 repeat
   -> benchmarks/results/optimizer_step_sgd_sai_sink_gd_gpu.md

The normalization benchmarks (normalization_layers.py,
transformer_normalization.py) are not on the harness's `--device` option
yet and are left out.

Usage (from the repository root):

    python benchmarks/gpu_suite.py --dry-run   # the plan, no GPU needed
    python benchmarks/gpu_suite.py             # needs CUDA (exit 2 if not)
    python benchmarks/gpu_suite.py --quick --device cpu  # the same, CPU
"""

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import device as device_lib  # noqa: E402

BUDGET_S = 480
BACKENDS = ("jax", "torch")
# (script, its options, seconds it may take on one GPU).
STEPS = [
    (
        "optimizer_step.py",
        ["--repeats", "1", "--steps", "30", "--max-wait", "0"],
        300,
    ),
    ("optimizer_step_sgd_sai_sink_gd.py", ["--repeats", "1"], 150),
]


def commands(args):
    out = []
    for script, options, limit in STEPS:
        name = os.path.splitext(script)[0]
        argv = [sys.executable, os.path.join(HERE, script)]
        argv += ["--device", args.device] + options
        if args.quick:
            argv.append("--quick")
        else:
            suffix = "gpu" if args.device == "cuda" else args.device
            path = os.path.join(HERE, "results", f"{name}_{suffix}.jsonl")
            argv += ["--output", path]
        # --backend all: jax and torch (tensorflow rows are left out on
        # cuda by the scripts themselves).
        out.append((argv + ["--backend", "all"], limit))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes")
    p.add_argument("--dry-run", action="store_true", help="print the plan")
    args = p.parse_args(argv)
    plan = commands(args)
    if args.dry_run:
        print(f"GPU suite, device {args.device}, budget {BUDGET_S} s:")
        for cmd, limit in plan:
            print(f"  [{limit:4d} s] " + " ".join(cmd[1:]))
        return 0
    device_lib.require(args.device, BACKENDS)
    t0 = time.perf_counter()
    failed = 0
    for cmd, limit in plan:
        left = BUDGET_S - (time.perf_counter() - t0)
        print("+ " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
        try:
            rc = subprocess.run(cmd, timeout=max(left, 1)).returncode
        except subprocess.TimeoutExpired:
            print("suite budget spent", file=sys.stderr)
            return 1
        failed += rc != 0
    print(f"GPU suite took {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
