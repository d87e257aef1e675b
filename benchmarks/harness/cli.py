"""The options every benchmark script shares, and its main loop."""

import argparse
import os
import sys

from harness import device as device_lib
from harness import machine
from harness import render

RESULTS = os.path.join(machine.REPO_ROOT, "benchmarks", "results")
BACKENDS = ("jax", "tensorflow", "torch")


def parser(description, default_output, backends=BACKENDS, repeats=3):
    """An ArgumentParser with the shared options.

    `default_output`: file name (under benchmarks/results/) of the JSONL,
    with `{device}` for the device.
    """
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--backend",
        choices=(*backends, "all"),
        default="all",
        help="which backend(s) to run (default: all)",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="run on the CPU (default) or one CUDA GPU; with cuda, exits "
        "with status 2 when CUDA is not available",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=repeats,
        help="processes per configuration, interleaved",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes, one repeat, few steps: checks that the script "
        "runs (the numbers mean nothing); writes to a temporary file "
        "unless --output is given",
    )
    p.add_argument(
        "--output",
        default=None,
        metavar="FILE.jsonl",
        help="JSONL of the raw rows; the markdown goes next to it "
        f"(default: benchmarks/results/{default_output})",
    )
    p.add_argument("--append", action="store_true", help="append to --output")
    p.add_argument(
        "--render-only",
        default=None,
        metavar="FILE.jsonl",
        help="re-render the markdown next to FILE.jsonl from its rows and "
        "exit (no benchmarking)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (processes, configurations, environment) and exit",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=None,
        help="nice value of the benchmark processes (negative needs root)",
    )
    p.add_argument(
        "--max-wait",
        type=float,
        default=120.0,
        help="seconds to wait for a quiet machine before each process",
    )
    p.set_defaults(_default_output=default_output)
    return p


def parse_rounds(
    argv, description, default_output, backends, rounds, calls, only_help
):
    """The options of a benchmark that times `--rounds` rounds of
    `--calls` calls per case in one child process per backend: the shared
    options, those three and the child's own; `--quick` makes it one
    round of one call in one process, without waiting for a quiet
    machine."""
    p = parser(description, default_output, backends=backends, repeats=1)
    p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--calls", type=int, default=calls)
    p.add_argument("--only", default=None, help=only_help)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--repeat", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.rounds, args.calls, args.max_wait = 1, 1, 1, 0.0
    return args


def selected_backends(args, backends=BACKENDS):
    return list(backends) if args.backend == "all" else [args.backend]


def device_backends(args, backends=BACKENDS):
    """The selected backends that run on `--device` (no TensorFlow on
    CUDA)."""
    chosen = selected_backends(args, backends)
    if args.device == "cuda":
        chosen = [b for b in chosen if b != "tensorflow"]
    return chosen


def rounds_child_argv(script, args):
    """The `argv(backend, label, repeat)` that `suite.run` calls for a
    `parse_rounds` benchmark: `script` re-run as the child of `backend`
    with the parent's options."""

    def argv(backend, label, repeat):
        out = [script, "--child", backend, "--repeat", str(repeat)]
        out += ["--rounds", str(args.rounds), "--calls", str(args.calls)]
        out += ["--device", args.device]
        out += ["--only", args.only] if args.only else []
        return out + (["--quick"] if args.quick else [])

    return argv


def output_path(args):
    """Where the rows go: --output, a temporary file for --quick, or the
    committed file."""
    if args.output:
        return args.output
    name = args._default_output.format(device=args.device)
    if args.quick:
        import tempfile

        return os.path.join(tempfile.mkdtemp(prefix="bench_quick_"), name)
    return os.path.join(RESULTS, name)


def main(args, backends, run, render_rows, plan):
    """Shared flow: render-only, dry run, device check, run, render.

    `run(args, path)` writes rows to `path` and may return the number of
    runs that failed (then the exit status is 1, after the table of the
    rows that came back); `render_rows(rows, md_path)` returns the
    markdown; `plan(args)` returns the lines --dry-run prints.
    """
    if args.render_only:
        md = render.markdown_path(args.render_only)
        text = render_rows(render.load_rows(args.render_only), md)
        print(render.write(render.with_notes(text, md), md))
        return 0
    if args.dry_run:
        print("\n".join(plan(args)))
        return 0
    device_lib.require(args.device, backends)
    path = output_path(args)
    failed = run(args, path)
    md = render.markdown_path(path)
    text = render_rows(render.load_rows(path), md)
    print(render.write(render.with_notes(text, md), md))
    print(f"rows: {path}\ntable: {md}", file=sys.stderr)
    return 1 if failed else 0
