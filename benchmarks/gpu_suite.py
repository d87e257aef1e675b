"""The optimizer-step and normalization suite on one CUDA GPU, in 8 minutes.

Runs, one after the other, each with `--device cuda` on the JAX and torch
backends (the environment has tensorflow-cpu only; the scripts leave
TensorFlow out on cuda):

1. `optimizer_step_sgd_sai_sink_gd.py`, 1 repeat
   -> benchmarks/results/optimizer_step_sgd_sai_sink_gd_gpu.md
2. `normalization_layers.py`, every layer, 1 process per backend
   (torch calls end with `torch.cuda.synchronize()`)
   -> benchmarks/results/normalization_layers_gpu.md
3. `transformer_normalization.py`, every variant, 1 process per backend
   -> benchmarks/results/transformer_normalization_gpu.md
4. `optimizer_step.py`, every Adan, Lamb and Lars row, 1 repeat of 30
   steps, no retries (the floor is a device copy; the table reports its
   achieved HBM bandwidth) -> benchmarks/results/optimizer_step_gpu.md

Each step may run for the budget left minus what the later steps reserve
(the seconds in the plan), so a slow step cannot starve the others. A
step stopped by its deadline (its whole process group) still gets a
table: the suite re-renders the rows it wrote with `--render-only`, and
exits with status 1.

Usage (from the repository root):

    python benchmarks/gpu_suite.py --dry-run   # the plan, no GPU needed
    python benchmarks/gpu_suite.py             # needs CUDA (exit 2 if not)
    python benchmarks/gpu_suite.py --quick --device cpu  # the same, CPU
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from harness import device as device_lib  # noqa: E402

BUDGET_S = 480
BACKENDS = ("jax", "torch")
# (script, its options, seconds reserved for it on one GPU); the last step
# also gets whatever the earlier ones left.
STEPS = [
    ("optimizer_step_sgd_sai_sink_gd.py", ["--repeats", "1"], 90),
    ("normalization_layers.py", [], 60),
    ("transformer_normalization.py", [], 70),
    (
        "optimizer_step.py",
        ["--repeats", "1", "--steps", "30", "--retries", "0"],
        260,
    ),
]
assert sum(reserve for _, _, reserve in STEPS) == BUDGET_S


def commands(args):
    """[(argv, output JSONL, reserved seconds)] of the suite's steps."""
    out_dir = (
        tempfile.mkdtemp(prefix="gpu_suite_quick_")
        if args.quick
        else os.path.join(HERE, "results")
    )
    suffix = "gpu" if args.device == "cuda" else args.device
    out = []
    for script, options, reserve in STEPS:
        name = os.path.splitext(script)[0]
        path = os.path.join(out_dir, f"{name}_{suffix}.jsonl")
        argv = [sys.executable, os.path.join(HERE, script)]
        argv += ["--device", args.device, "--max-wait", "0", *options]
        argv += ["--quick"] if args.quick else []
        # --backend all: jax and torch on cuda (the scripts leave
        # tensorflow out there).
        out.append(
            (argv + ["--output", path, "--backend", "all"], path, reserve)
        )
    return out


def _run(argv, timeout):
    """Runs `argv` in its own process group; kills the group at `timeout`.

    Returns the exit status, or None when the deadline stopped it.
    """
    proc = subprocess.Popen(argv, start_new_session=True)
    try:
        return proc.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return None


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes")
    p.add_argument("--dry-run", action="store_true", help="print the plan")
    args = p.parse_args(argv)
    plan = commands(args)
    if args.dry_run:
        print(f"GPU suite, device {args.device}, budget {BUDGET_S} s:")
        for cmd, _, reserve in plan:
            print(f"  [{reserve:4d} s] " + " ".join(cmd[1:]))
        return 0
    device_lib.require(args.device, BACKENDS)
    t0 = time.perf_counter()
    failed = 0
    for i, (cmd, path, _) in enumerate(plan):
        later = sum(reserve for _, _, reserve in plan[i + 1 :])
        deadline = BUDGET_S - (time.perf_counter() - t0) - later
        print("+ " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
        rc = _run(cmd, deadline)
        if rc is None:
            print(
                f"deadline ({deadline:.0f} s) reached: stopped; the table "
                "shows the rows written so far",
                file=sys.stderr,
                flush=True,
            )
            if os.path.exists(path):
                subprocess.run(
                    [cmd[0], cmd[1], "--render-only", path],
                    stdout=subprocess.DEVNULL,
                )
        failed += rc != 0
    print(f"GPU suite took {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
