"""One optimizer step over ~10M float32 parameters, side by side.

Times `keras_batchopt.optimizers.Adan` against Keras's Adam and AdamW,
`optax.adan`, timm's and pytorch_optimizer's Adan; `keras_batchopt`'s Lamb
against Keras's Lamb, `optax.lamb`, timm's and pytorch_optimizer's Lamb;
its Lars against `optax.lars`, timm's Lars and pytorch_optimizer's LARS;
and the bytes-moved floor, each run the way `model.fit` runs it (see
`harness.optimizer_steps`). The rows are declared per family in
`optimizer_configs/` (`adan`, `lamb`, `lars`); the table and its targets
are `optimizer_configs/report.py`.

Every configuration runs in its own subprocess; the whole suite is
repeated `--repeats` times (interleaved). A run that other processes
disturbed is retried. See benchmarks/README.md for how to read the table.

Usage (from the repository root):

    python benchmarks/optimizer_step.py --backend all --repeats 3 \
        --only 'adan|adam|floor' \
        --output benchmarks/results/optimizer_step_cpu.jsonl
    python benchmarks/optimizer_step.py --quick --backend torch
    python benchmarks/optimizer_step.py \
        --render-only benchmarks/results/optimizer_step_cpu.jsonl
"""

import argparse
import gc
import json
import os
import re
import shutil
import sys
import tempfile
import time

from harness import cli
from harness import floors
from harness import machine
from harness import optimizer_steps
from harness import process
from harness import timing
from optimizer_configs import common
from optimizer_configs import report
from optimizer_configs.catalog import CONFIGS
from optimizer_configs.catalog import CONFIGS_BY_NAME
from optimizer_configs.catalog import family_of


def run_child(name, steps, warmup, quick, device):
    cfg = CONFIGS_BY_NAME[name]
    t_setup = time.perf_counter()
    params, grads = common.data(quick)
    step, info = optimizer_steps.setup(
        cfg,
        family_of(cfg) if cfg["impl"] != "floor" else None,
        params,
        grads,
        device,
        common.THREADS,
    )
    n_params = sum(p.size for p in params)
    del params, grads
    gc.collect()
    setup_s = time.perf_counter() - t_setup
    result = timing.time_steps(
        step, steps, warmup, getattr(step, "prepare", None)
    )
    if hasattr(step, "after"):
        step.after()
    variant, states = cfg["variant"], cfg["states"]
    nbytes = common.bytes_per_step(states, n_params)
    if cfg["impl"] == "floor":
        variant = floors.FLOOR_VARIANTS[(cfg["framework"], device)]
        nbytes = floors.floor_passes(device) * 4 * n_params
    process.emit(
        dict(
            config=name,
            group=cfg["group"],
            framework=cfg["framework"],
            impl=cfg["impl"],
            opt=cfg["opt"],
            variant=variant,
            states=states,
            threads=common.THREADS,
            n_params=n_params,
            n_tensors=len(common.shapes(quick)),
            bytes_per_step=nbytes,
            **result,
            setup_s=setup_s,
            inductor_cache_dir=os.environ.get(
                "TORCHINDUCTOR_CACHE_DIR", "default"
            ),
            device=device,
            **info,
        )
    )


def select(backend, only, device="cpu"):
    groups = {"floor"}
    groups |= set(common.BACKEND_ORDER) if backend == "all" else {backend}
    configs = [c for c in CONFIGS if c["group"] in groups]
    if device == "cuda":  # tensorflow-cpu; XLA:GPU rows are not declared
        configs = [c for c in configs if c["framework"] != "tensorflow"]
    if only:
        pattern = re.compile(only)
        configs = [
            c
            for c in configs
            if pattern.search(c["name"]) or c["name"] == common.FLOOR_NAME
        ]
    return configs


def _argv(cfg, args):
    argv = [os.path.abspath(__file__), "--child", cfg["name"]]
    argv += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
    argv += ["--device", args.device] + (["--quick"] if args.quick else [])
    return argv


def _env(cfg, args, inductor_dir):
    extra = {}
    if cfg.get("inductor_cache") == "suite":
        # Empty at the start of the suite: the first repeat compiles cold,
        # the later ones reuse this configuration's own kernel.
        extra["TORCHINDUCTOR_CACHE_DIR"] = inductor_dir
    return process.child_env(
        cfg["framework"], common.THREADS, args.device, extra
    )


def run_suite(args, path):
    configs = select(args.backend, args.only, args.device)
    run_id = process.suite_id()
    inductor_dir = tempfile.mkdtemp(prefix="optimizer_step_inductor_")
    t0 = time.perf_counter()
    mode = "a" if args.append else "w"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with open(path, mode) as out:
            for rep in range(args.repeats):
                for cfg in configs:
                    for attempt in range(args.retries + 1):
                        row = _run_one(cfg, args, inductor_dir, run_id, rep)
                        row["attempt"] = attempt
                        out.write(json.dumps(row) + "\n")
                        out.flush()
                        if not row["disturbed"]:
                            break
    finally:
        shutil.rmtree(inductor_dir, ignore_errors=True)
    print(f"suite took {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def _run_one(cfg, args, inductor_dir, run_id, rep):
    waited, quiet = machine.wait_for_quiet(args.max_wait, args.quiet)
    rows, info = process.run(
        _argv(cfg, args), _env(cfg, args, inductor_dir), args.timeout, args.nice
    )
    row = rows[-1] if rows else dict(config=cfg["name"], **info)
    row.update(
        process.context(quiet),
        run=rep,
        run_id=run_id,
        process_wall_s=round(info["wall_s"], 2),
        waited_s=round(waited, 1),
        foreign_cores_before=quiet["foreign_cores"],
        nice=args.nice,
    )
    # Disturbed: other processes ran while we timed AND our threads had to
    # wait for a CPU because of it.
    row["disturbed"] = (
        "error" not in row
        and row["foreign_cores"] > args.max_foreign
        and row["runqueue_wait_frac"] > args.max_wait_frac
    )
    _print_progress(row, rep, args.repeats)
    return row


def _print_progress(row, rep, repeats):
    if "error" in row:
        msg = f"ERROR {row['error']}"
    else:
        msg = (
            f"{row['median_ms']:8.2f} ms (p10 {row['p10_ms']:.2f}, p90 "
            f"{row['p90_ms']:.2f})  1st {row['first_call_s']:.2f} s  own "
            f"{row['own_cores']:.2f} / foreign {row['foreign_cores']:.2f} "
            f"cores, rq wait {row['runqueue_wait_frac']:.2f}"
        )
    print(
        f"[run {rep + 1}/{repeats}] {row['config']:30s} {msg}"
        + ("  DISTURBED" if row.get("disturbed") else ""),
        file=sys.stderr,
        flush=True,
    )


def plan(args):
    configs = select(args.backend, args.only, args.device)
    env = process.child_env("<backend>", common.THREADS, args.device)
    keys = ("KERAS_BACKEND", "JAX_PLATFORMS", "OMP_NUM_THREADS")
    return [
        f"optimizer_step: {len(configs)} configurations x {args.repeats} "
        f"repeat(s), one process each, device {args.device}, "
        f"{args.steps} timed steps after {args.warmup} warm-up steps",
        "environment: " + ", ".join(f"{k}={env.get(k)}" for k in keys),
        *(f"  {c['name']}: {c['variant']}" for c in configs),
    ]


def parse(argv=None):
    p = cli.parser(__doc__.split("\n")[0], "optimizer_step_{device}.jsonl")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument(
        "--warmup",
        type=int,
        default=5,
        help="untimed steps before timing, the first one included",
    )
    p.add_argument("--only", default=None, help="regex on configuration names")
    p.add_argument("--timeout", type=int, default=600, help="s per process")
    p.add_argument(
        "--quiet",
        type=float,
        default=0.2,
        help="start a process only when other processes use fewer cores",
    )
    p.add_argument(
        "--max-foreign",
        type=float,
        default=0.2,
        help="a run is 'disturbed' (and retried) if other processes used "
        "more cores than this while it timed ...",
    )
    p.add_argument(
        "--max-wait-frac",
        type=float,
        default=0.05,
        help="... and our threads waited for a CPU for more than this "
        "fraction of the timed wall time",
    )
    p.add_argument("--retries", type=int, default=1)
    p.add_argument("--list", action="store_true", help="list configurations")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.steps, args.warmup = 1, 3, 2
        args.retries, args.max_wait = 0, 0.0
    return args


def main(argv=None):
    args = parse(argv)
    if args.child:
        run_child(args.child, args.steps, args.warmup, args.quick, args.device)
        return 0
    if args.list:
        print("\n".join(plan(args)[2:]))
        return 0
    backends = sorted(
        {c["framework"] for c in select(args.backend, args.only, args.device)}
    )
    return cli.main(args, backends, run_suite, report.render, plan)


if __name__ == "__main__":
    sys.exit(main())
