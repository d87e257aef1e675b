"""One SGD-SaI, SinkGD and AdaGrad-Norm step over ~10M float32 parameters.

Times `keras_batchopt.optimizers.SGDSaI`, `SinkGD` (`num_iterations` 5 and
1) and `AdaGradNorm` side by side with Keras's `SGD(momentum=0.9)` and
`AdamW`, and on torch with `pytorch_optimizer.SGDSaI` (loop and foreach),
over the same 50-tensor set as `benchmarks/optimizer_step.py`
(`optimizer_configs/common.py`), each run the way `model.fit` runs it
(`harness.optimizer_steps`). The rows are declared in
`optimizer_configs/sgd_sai_sink_gd.py`.

Unlike optimizer_step.py, one process per backend sets up every
configuration of that backend and times them round-robin (`--rounds`
rounds of `--steps-per-round` steps each, after 5 warm-up steps), so that
drift hits every row alike; the whole suite (one process per backend) is
repeated `--repeats` times, interleaved. The reference floor is the same
`torch._foreach_add_` over the same tensors, timed in the torch process.

Usage (from the repository root):

    python benchmarks/optimizer_step_sgd_sai_sink_gd.py --repeats 3
    python benchmarks/optimizer_step_sgd_sai_sink_gd.py --quick --backend jax
    python benchmarks/optimizer_step_sgd_sai_sink_gd.py --render-only \
        benchmarks/results/optimizer_step_sgd_sai_sink_gd_cpu.jsonl
"""

import argparse
import gc
import json
import os
import sys

import numpy as np
from harness import cli
from harness import floors
from harness import machine
from harness import optimizer_steps
from harness import process
from harness import render as md
from harness import timing
from optimizer_configs import common
from optimizer_configs import sgd_sai_sink_gd as family
from optimizer_configs.sgd_sai_sink_gd import ADAGRAD_NORM_LR
from optimizer_configs.sgd_sai_sink_gd import ADAMW_LR
from optimizer_configs.sgd_sai_sink_gd import CONFIGS
from optimizer_configs.sgd_sai_sink_gd import MOMENTUM
from optimizer_configs.sgd_sai_sink_gd import SAI_LR
from optimizer_configs.sgd_sai_sink_gd import SGD_LR
from optimizer_configs.sgd_sai_sink_gd import SINK_LR
from optimizer_configs.sgd_sai_sink_gd import WEIGHT_DECAY

SHAPES = common.SHAPES
N_PARAMS = common.N_PARAMS
THREADS = common.THREADS
# Parameters SinkGD normalizes (rank >= 2) and those its AdamW fallback
# trains (rank 1).
N_MATRIX = sum(common.size(s) for s in SHAPES if len(s) >= 2)
N_VECTOR = N_PARAMS - N_MATRIX
BACKENDS = ("torch", "jax", "tensorflow")


def floor_bytes(opt, n_matrix=N_MATRIX, n_vector=N_VECTOR):
    """Minimal single-pass traffic of one step, in bytes (see README).

    S state tensors: read g, read and write w and each state,
    (3 + 2 S) x 4 B x N. SinkGD: its matrices have S = 0 but each of the
    2 L normalizations (L = num_iterations) needs one more read of the
    gradient (a row or column norm of the rescaled gradient, which depends
    on the previous one), so (3 + 2 L) x 4 B x N_matrix; its rank-1
    fallback is AdamW, S = 2.
    """
    if opt.startswith("sinkgd"):
        passes = int(opt[len("sinkgd") :])
        return (3 + 2 * passes) * 4 * n_matrix + 7 * 4 * n_vector
    states = {
        "floor": 0,
        "sgd": 1,
        "sgdsai": 1,
        "adamw": 2,
        "adagradnorm": 0,
    }[opt]
    return (3 + 2 * states) * 4 * (n_matrix + n_vector)


def floor_bytes_state_only(opt, n_matrix=N_MATRIX, n_vector=N_VECTOR):
    """The S-only count: SinkGD matrices as S = 0 (no Sinkhorn passes)."""
    if opt.startswith("sinkgd"):
        return 3 * 4 * n_matrix + 7 * 4 * n_vector
    return floor_bytes(opt, n_matrix, n_vector)


def config_name(cfg):
    backend, impl, opt, variant = cfg
    short = {"tensorflow": "tf"}.get(backend, backend)
    impl = {"pytorch_optimizer": "pto", "keras_batchopt": "batchopt"}.get(
        impl, impl
    )
    suffix = ""
    if "XLA" in variant and impl != "floor":
        suffix = "-xla"
    elif variant.startswith("graph"):
        suffix = "-graph"
    elif variant.startswith("loop"):
        suffix = "-loop"
    elif variant.startswith("foreach"):
        suffix = "-foreach"
    return f"{short}-{impl}-{opt}{suffix}"


def run_child(args):
    """One backend: every configuration set up, then timed round-robin."""
    backend = args.child
    params, grads = common.data(args.quick)
    n_matrix = sum(p.size for p in params if p.ndim >= 2)
    n_vector = sum(p.size for p in params if p.ndim < 2)
    n_tensors = len(params)
    configs = [c for c in CONFIGS if c[0] == backend]
    steps = {}
    for cfg in configs:
        steps[config_name(cfg)], _ = optimizer_steps.setup(
            family.as_dict(cfg), family, params, grads, args.device, THREADS
        )
    first = timing.warm_up(steps, args.warmup)
    del params, grads
    gc.collect()
    timed = timing.round_robin(steps, args.rounds, args.steps_per_round)
    for cfg in configs:
        name = config_name(cfg)
        times, acct = timed[name]
        arr = np.asarray(times)
        a = acct.result(len(arr))
        variant = cfg[3]
        nbytes = floor_bytes(cfg[2], n_matrix, n_vector)
        if cfg[1] == "floor":
            variant = floors.FLOOR_VARIANTS[(backend, args.device)]
            nbytes = (
                floors.floor_passes(args.device) * 4 * (n_matrix + n_vector)
            )
        process.emit(
            dict(
                config=name,
                backend=cfg[0],
                impl=cfg[1],
                opt=cfg[2],
                variant=variant,
                repeat=args.repeat,
                bytes_per_step=nbytes,
                bytes_state_only=floor_bytes_state_only(
                    cfg[2], n_matrix, n_vector
                ),
                median_ms=float(np.median(arr)),
                p10_ms=float(np.percentile(arr, 10)),
                p90_ms=float(np.percentile(arr, 90)),
                first_call_s=first[name],
                own_cores=a["own_cores"],
                foreign_cores=a["foreign_cores"],
                minflt_per_step=a["minflt_per_step"],
                times_ms=[round(t, 4) for t in times],
                n_matrix=n_matrix,
                n_vector=n_vector,
                n_tensors=n_tensors,
                device=args.device,
            )
        )


def _backends(args):
    chosen = cli.selected_backends(args)
    if args.device == "cuda":
        chosen = [b for b in chosen if b != "tensorflow"]
    return [b for b in BACKENDS if b in chosen]


def run_suite(args, path):
    suite = process.suite_id()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a" if args.append else "w") as out:
        for repeat in range(args.repeats):
            for backend in _backends(args):
                _, quiet = machine.wait_for_quiet(args.max_wait)
                argv = [os.path.abspath(__file__), "--child", backend]
                argv += ["--rounds", str(args.rounds), "--repeat", str(repeat)]
                argv += ["--steps-per-round", str(args.steps_per_round)]
                argv += ["--warmup", str(args.warmup), "--device", args.device]
                argv += ["--quick"] if args.quick else []
                env = process.child_env(backend, THREADS, args.device)
                rows, info = process.run(argv, env, 900, args.nice)
                context = process.context(quiet)
                for row in rows:
                    row.update(context, suite=suite, nice=args.nice)
                    row["commit"] = row["git_head"][:7]
                    out.write(json.dumps(row) + "\n")
                out.flush()
                print(
                    f"repeat {repeat} {backend}: {len(rows)} rows, "
                    f"{info['wall_s']:.0f} s",
                    file=sys.stderr,
                    flush=True,
                )


def plan(args):
    lines = [
        f"optimizer_step_sgd_sai_sink_gd: {args.repeats} repeat(s) x one "
        f"process per backend, device {args.device}, {args.rounds} rounds "
        f"of {args.steps_per_round} steps"
    ]
    for backend in _backends(args):
        names = [config_name(c) for c in CONFIGS if c[0] == backend]
        lines.append(f"  {backend}: " + ", ".join(names))
    return lines


def aggregate(rows):
    import numpy as np

    agg = {}
    for r in rows:
        agg.setdefault(r["config"], []).append(r)
    out = {}
    for name, rs in agg.items():
        med = [r["median_ms"] for r in rs]
        out[name] = dict(
            rs[0],
            runs=len(rs),
            median_ms=float(np.median(med)),
            min_ms=float(min(med)),
            max_ms=float(max(med)),
            p10_ms=float(np.median([r["p10_ms"] for r in rs])),
            p90_ms=float(np.median([r["p90_ms"] for r in rs])),
            first_call_s=float(np.median([r["first_call_s"] for r in rs])),
            own_cores=float(np.median([r["own_cores"] for r in rs])),
            foreign_cores=float(max(r["foreign_cores"] for r in rs)),
            minflt_per_step=float(
                np.median([r["minflt_per_step"] for r in rs])
            ),
        )
    return out


TARGET_ROWS = [
    ("JAX (jit, donated)", "jax-batchopt-{}"),
    ("TensorFlow XLA", "tf-batchopt-{}-xla"),
    ("TensorFlow graph (= fit on CPU)", "tf-batchopt-{}-graph"),
    ("torch (eager)", "torch-batchopt-{}"),
]
LABELS = {
    "floor": "copy",
    "sgd": "SGD(momentum=0.9)",
    "adamw": "AdamW",
    "sgdsai": "SGDSaI",
    "sinkgd5": "SinkGD(num_iterations=5)",
    "sinkgd1": "SinkGD(num_iterations=1)",
    "adagradnorm": "AdaGradNorm",
}


def render(rows, keep_from=None):
    agg = aggregate(rows)
    n_matrix = rows[0].get("n_matrix", N_MATRIX)
    n_vector = rows[0].get("n_vector", N_VECTOR)
    # Rows written before `n_tensors` was recorded are full-size runs.
    n_tensors = rows[0].get("n_tensors", len(SHAPES))
    tensor_set = "set" if n_tensors == len(SHAPES) else "--quick set"

    def floor_bytes(opt):
        return globals()["floor_bytes"](opt, n_matrix, n_vector)

    def floor_bytes_state_only(opt):
        return globals()["floor_bytes_state_only"](opt, n_matrix, n_vector)

    # The torch process times the floor; without it (--backend jax or
    # tensorflow) the floor columns read nan.
    floor = agg.get("torch-floor-floor", dict(median_ms=float("nan")))
    gbps = floor_bytes("floor") / (floor["median_ms"] * 1e-3) / 1e9

    def floor_ms(nbytes):
        return nbytes / (gbps * 1e9) * 1e3

    suites = sorted({r.get("suite", "?") for r in rows})
    runs = max(e["runs"] for e in agg.values())
    r0 = rows[0]
    lines = [
        "# Optimizer step on CPU: SGD-SaI, SinkGD and AdaGrad-Norm vs SGD, "
        "AdamW and pytorch_optimizer",
        "",
        *md.recorded_lines(rows, keep_from),
        "- keras_batchopt: this checkout at "
        + ", ".join(sorted({r["commit"] for r in rows if "commit" in r})),
        f"- benchmark processes at nice {r0.get('nice')}; suite run id(s) "
        f"{', '.join(suites)}; {runs} process(es) per "
        f"backend, interleaved; each process times every configuration of "
        f"its backend round-robin, {len(r0['times_ms'])} timed steps per "
        f"configuration and process after 5 warm-up steps",
        f"- {n_tensors} float32 tensors, {n_matrix + n_vector:,} parameters "
        f"({n_matrix:,} in rank >= 2 tensors, {n_vector:,} in rank-1), the "
        f"{tensor_set} of optimizer_step.py; 2 threads",
        f"- SGD lr {SGD_LR}, momentum {MOMENTUM}, no decay; AdamW lr "
        f"{ADAMW_LR}, weight_decay {WEIGHT_DECAY}; SGDSaI (ours and "
        f"pytorch_optimizer) lr {SAI_LR}, momentum {MOMENTUM}, "
        f"weight_decay {WEIGHT_DECAY}; SinkGD lr {SINK_LR}, weight_decay "
        f"{WEIGHT_DECAY}, default routing (every rank-1 tensor to AdamW); "
        f"AdaGradNorm lr {ADAGRAD_NORM_LR}, global accumulator",
        "",
        f"Reference floor (torch._foreach_add_, in place, 2 threads): "
        f"**{floor['median_ms']:.2f} ms** for "
        f"{floor_bytes('floor') / 1e6:.1f} MB = **{gbps:.1f} GB/s**.",
        "",
        "Bytes moved per step (the floor of each row, `bytes / floor GB/s`):",
        "",
        "- S state tensors: `(3 + 2 S) x 4 B x N` (read g, read and write w "
        "and each state). SGD and SGD-SaI S = 1 (the momentum; SGD-SaI's "
        "per-tensor gSNR scalar is negligible), AdamW S = 2: "
        f"{floor_bytes('sgd') / 1e6:.0f} MB = "
        f"{floor_ms(floor_bytes('sgd')):.2f} ms and "
        f"{floor_bytes('adamw') / 1e6:.0f} MB = "
        f"{floor_ms(floor_bytes('adamw')):.2f} ms.",
        "- SinkGD with L iterations: matrices keep no state (S = 0) but each "
        "of the 2 L row/column normalizations needs one read of the "
        "gradient (each norm depends on the previous scaling), so "
        "`(3 + 2 L) x 4 B x N_matrix`, plus AdamW's `7 x 4 B x N_vector` "
        f"for the rank-1 fallback: L=5 {floor_bytes('sinkgd5') / 1e6:.0f} "
        f"MB = {floor_ms(floor_bytes('sinkgd5')):.2f} ms, L=1 "
        f"{floor_bytes('sinkgd1') / 1e6:.0f} MB = "
        f"{floor_ms(floor_bytes('sinkgd1')):.2f} ms. The stricter S-only "
        "count (`3 x 4 B x N_matrix + 7 x 4 B x N_vector`, as if the "
        "normalization were free: "
        f"{floor_bytes_state_only('sinkgd5') / 1e6:.0f} MB = "
        f"{floor_ms(floor_bytes_state_only('sinkgd5')):.2f} ms) is the "
        "'x S-only floor' column.",
        "- AdaGrad-Norm (global accumulator) keeps one scalar, S = 0: "
        f"{floor_bytes('adagradnorm') / 1e6:.0f} MB = "
        f"{floor_ms(floor_bytes('adagradnorm')):.2f} ms; its update needs "
        "the norm of every gradient first, so a one-pass step is not "
        "possible (one more read of g: 4 x 4 B x N).",
        "",
        "| backend | impl | optimizer | variant | ms/step (median of runs) | "
        "run-to-run min..max | within-run p10..p90 | floor ms | x floor | "
        "x S-only floor | 1st call s | minor faults/step | own cores | "
        "other procs, cores (max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = [config_name(c) for c in CONFIGS]
    for name in order:
        e = agg.get(name)
        if e is None:
            continue
        fm = floor_ms(e["bytes_per_step"])
        fs = floor_ms(e["bytes_state_only"])
        impl = e["impl"]
        if impl == "keras_batchopt":
            impl = "**keras_batchopt**"
        lines.append(
            f"| {e['backend']} | {impl} | {LABELS[e['opt']]} | "
            f"{e['variant']} | **{e['median_ms']:.1f}** | "
            f"{e['min_ms']:.1f}..{e['max_ms']:.1f} | "
            f"{e['p10_ms']:.1f}..{e['p90_ms']:.1f} | {fm:.2f} | "
            f"{e['median_ms'] / fm:.2f} | {e['median_ms'] / fs:.2f} | "
            f"{e['first_call_s']:.2f} | {e['minflt_per_step']:.0f} | "
            f"{e['own_cores']:.2f} | {e['foreign_cores']:.2f} |"
        )
    lines += ["", "## Targets (computed from the table)", ""]
    for opt in ("sgdsai", "sinkgd5", "sinkgd1", "adagradnorm"):
        fm = floor_ms(floor_bytes(opt))
        lines.append(
            f"{LABELS[opt]} step <= 2.0x its bytes-moved floor "
            f"({fm:.2f} ms, so <= {2 * fm:.2f} ms):"
        )
        lines.append("")
        for label, pattern in TARGET_ROWS:
            e = agg.get(pattern.format(opt))
            if e is None:
                continue
            ratio = e["median_ms"] / fm
            verdict = "met" if ratio <= 2.0 else "NOT met"
            lines.append(
                f"- {label}: {e['median_ms']:.1f} ms = {ratio:.2f}x -> "
                f"{verdict}"
            )
        lines.append("")
    ours = agg.get("torch-batchopt-sgdsai")
    peers = [
        agg[n]
        for n in ("torch-pto-sgdsai-loop", "torch-pto-sgdsai-foreach")
        if n in agg
    ]
    if ours and peers:
        best = min(peers, key=lambda e: e["median_ms"])
        verdict = "met" if ours["median_ms"] < best["median_ms"] else "NOT met"
        lines.append(
            "SGD-SaI faster than pytorch_optimizer's SGDSaI on torch (best "
            f"of loop/foreach): ours {ours['median_ms']:.1f} ms vs "
            f"{best['config']} {best['median_ms']:.1f} ms = "
            f"{best['median_ms'] / ours['median_ms']:.2f}x speed-up -> "
            f"{verdict}"
        )
        lines.append("")
    return "\n".join(lines)


def parse(argv=None):
    p = cli.parser(
        __doc__.split("\n")[0], "optimizer_step_sgd_sai_sink_gd_{device}.jsonl"
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps-per-round", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--repeat", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.rounds, args.steps_per_round = 1, 1, 3
        args.warmup, args.max_wait = 2, 0.0
    return args


def main(argv=None):
    args = parse(argv)
    if args.child:
        run_child(args)
        return 0
    return cli.main(args, _backends(args), run_suite, render, plan)


if __name__ == "__main__":
    sys.exit(main())
