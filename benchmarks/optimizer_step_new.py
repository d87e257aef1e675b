"""One SGD-SaI and SinkGD optimizer step over ~10M float32 parameters, CPU.

Times `keras_batchopt.optimizers.SGDSaI` and `SinkGD` (`num_iterations`
5 and 1) side by side with Keras's `SGD(momentum=0.9)` and `AdamW`, and on
torch with `pytorch_optimizer.SGDSaI` (loop and foreach), over the same
50-tensor set as `benchmarks/optimizer_step.py` (its `SHAPES`, data and
CPU-accounting helpers are imported from there), each run the way
`model.fit` runs it:

- JAX: `jax.jit` over `optimizer.stateless_apply`, trainable and optimizer
  buffers donated (`donate_argnums=(0, 1)`).
- TensorFlow: `tf.function(jit_compile=True)` (XLA) and plain `tf.function`
  (graph mode: `fit` on a CPU-only machine).
- torch: eager `optimizer.apply(grads, vars)` under `torch.no_grad()`;
  PyTorch optimizers run `opt.step()`.

Unlike optimizer_step.py, one process per backend sets up every
configuration of that backend and times them round-robin (`--rounds`
rounds of `--steps-per-round` steps each, after 5 warm-up steps), so that
drift hits every row alike; the whole suite (one process per backend) is
repeated `--repeats` times, interleaved. The reference floor is the same
`torch._foreach_add_` over the same tensors, timed in the torch process.

Usage (from the repository root):

    python benchmarks/optimizer_step_new.py --repeats 3 \
        --out benchmarks/results/optimizer_step_new_cpu.jsonl
    python benchmarks/optimizer_step_new.py \
        --table-only benchmarks/results/optimizer_step_new_cpu.jsonl
"""

import argparse
import datetime
import gc
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import optimizer_memory  # noqa: E402
import optimizer_step as base  # noqa: E402

SHAPES = base.SHAPES
N_PARAMS = base.N_PARAMS
THREADS = base.THREADS
# Parameters SinkGD normalizes (rank >= 2) and those its AdamW fallback
# trains (rank 1).
N_MATRIX = sum(base._size(s) for s in SHAPES if len(s) >= 2)
N_VECTOR = N_PARAMS - N_MATRIX

SGD_LR, MOMENTUM = 0.01, 0.9
ADAMW_LR, WEIGHT_DECAY = 1e-3, 0.01
SAI_LR = 0.01
SINK_LR = 1e-3


def floor_bytes(opt, variant=""):
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
        return (3 + 2 * passes) * 4 * N_MATRIX + 7 * 4 * N_VECTOR
    states = {"floor": 0, "sgd": 1, "sgdsai": 1, "adamw": 2}[opt]
    return (3 + 2 * states) * 4 * N_PARAMS


def floor_bytes_state_only(opt):
    """The S-only count: SinkGD matrices as S = 0 (no Sinkhorn passes)."""
    if opt.startswith("sinkgd"):
        return 3 * 4 * N_MATRIX + 7 * 4 * N_VECTOR
    return floor_bytes(opt)


# (backend, impl, opt, variant)
CONFIGS = [
    ("torch", "floor", "floor", "torch._foreach_add_ (in place)"),
    ("jax", "floor", "floor", "jit a+b, donated"),
    ("jax", "keras", "sgd", "jit, donated"),
    ("jax", "keras", "adamw", "jit, donated"),
    ("jax", "keras_batchopt", "sgdsai", "jit, donated"),
    ("jax", "keras_batchopt", "sinkgd5", "jit, donated"),
    ("jax", "keras_batchopt", "sinkgd1", "jit, donated"),
    ("tensorflow", "floor", "floor", "XLA v.assign_add(b)"),
]
for _opt_impl in (
    ("keras", "sgd"),
    ("keras", "adamw"),
    ("keras_batchopt", "sgdsai"),
    ("keras_batchopt", "sinkgd5"),
    ("keras_batchopt", "sinkgd1"),
):
    CONFIGS.append(("tensorflow", *_opt_impl, "XLA"))
    CONFIGS.append(("tensorflow", *_opt_impl, "graph (= fit on CPU)"))
CONFIGS += [
    ("torch", "keras", "sgd", "eager"),
    ("torch", "keras", "adamw", "eager"),
    ("torch", "keras_batchopt", "sgdsai", "eager (torch fast path)"),
    ("torch", "keras_batchopt", "sinkgd5", "eager (generic keras.ops)"),
    ("torch", "keras_batchopt", "sinkgd1", "eager (generic keras.ops)"),
    ("torch", "pytorch_optimizer", "sgdsai", "loop (foreach=False)"),
    ("torch", "pytorch_optimizer", "sgdsai", "foreach=True"),
]
BACKENDS = ("torch", "jax", "tensorflow")


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


# ---------------------------------------------------------------------------
# Child: one backend, every configuration, round-robin.
# ---------------------------------------------------------------------------


def keras_optimizer(keras, impl, opt):
    import keras_batchopt

    if opt == "sgd":
        return keras.optimizers.SGD(learning_rate=SGD_LR, momentum=MOMENTUM)
    if opt == "adamw":
        return keras.optimizers.AdamW(
            learning_rate=ADAMW_LR, weight_decay=WEIGHT_DECAY
        )
    if opt == "sgdsai":
        return keras_batchopt.optimizers.SGDSaI(
            learning_rate=SAI_LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY
        )
    if opt.startswith("sinkgd"):
        return keras_batchopt.optimizers.SinkGD(
            learning_rate=SINK_LR,
            num_iterations=int(opt[len("sinkgd") :]),
            weight_decay=WEIGHT_DECAY,
        )
    raise ValueError(opt)


def setup_jax(cfg, params, g):
    import jax
    import jax.numpy as jnp

    _, impl, opt, _ = cfg
    if impl == "floor":
        state = {"a": [jnp.asarray(x) for x in params]}
        add = jax.jit(
            lambda a, b: [x + y for x, y in zip(a, b)], donate_argnums=0
        )

        def step():
            state["a"] = add(state["a"], g)
            jax.block_until_ready(state["a"])

        return step
    import keras

    variables = [keras.Variable(x, name=f"w{i}") for i, x in enumerate(params)]
    optimizer = keras_optimizer(keras, impl, opt)
    optimizer.build(variables)
    state = {
        "tv": [jnp.array(v.value, copy=True) for v in variables],
        "ov": [jnp.array(v.value, copy=True) for v in optimizer.variables],
    }
    jitted = jax.jit(
        lambda tv, ov, g: optimizer.stateless_apply(ov, g, tv),
        donate_argnums=(0, 1),
    )
    del variables

    def step():
        state["tv"], state["ov"] = jitted(state["tv"], state["ov"], g)
        jax.block_until_ready((state["tv"], state["ov"]))

    return step


def setup_tensorflow(cfg, params, g):
    import tensorflow as tf

    _, impl, opt, variant = cfg
    xla = "XLA" in variant
    if impl == "floor":
        a = [tf.Variable(x) for x in params]

        @tf.function(jit_compile=True)
        def add(b):
            for v, y in zip(a, b):
                v.assign_add(y)

        def step():
            add(g)
            a[0][0, 0].numpy()

        return step
    import keras

    variables = [keras.Variable(x, name=f"w{i}") for i, x in enumerate(params)]
    optimizer = keras_optimizer(keras, impl, opt)
    optimizer.build(variables)
    fn = tf.function(lambda g: optimizer.apply(g, variables), jit_compile=xla)

    def step():
        fn(g)
        optimizer.iterations.numpy()

    return step


def setup_torch(cfg, params, g):
    import torch

    _, impl, opt, variant = cfg
    if impl == "floor":
        a = [torch.from_numpy(x.copy()) for x in params]

        def step():
            torch._foreach_add_(a, g)

        return step
    if impl == "pytorch_optimizer":
        from pytorch_optimizer import SGDSaI

        ps = [torch.nn.Parameter(torch.from_numpy(x.copy())) for x in params]
        for p, grad in zip(ps, g):
            p.grad = grad
        optimizer = SGDSaI(
            ps,
            lr=SAI_LR,
            momentum=MOMENTUM,
            weight_decay=WEIGHT_DECAY,
            foreach="foreach=True" in variant,
        )

        def step():
            with torch.no_grad():
                optimizer.step()

        return step
    import keras

    variables = [
        keras.Variable(torch.from_numpy(x.copy()), name=f"w{i}")
        for i, x in enumerate(params)
    ]
    optimizer = keras_optimizer(keras, impl, opt)
    optimizer.build(variables)

    def step():
        with torch.no_grad():
            optimizer.apply(g, variables)

    return step


def run_child(backend, warmup, rounds, steps_per_round, repeat):
    import numpy as np

    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    params, grads = base._data()
    if backend == "jax":
        import jax.numpy as jnp

        g = [jnp.asarray(x) for x in grads]
        setup = setup_jax
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(THREADS)
        g = [tf.constant(x) for x in grads]
        setup = setup_tensorflow
    else:
        import torch

        torch.set_num_threads(THREADS)
        g = [torch.from_numpy(x) for x in grads]
        setup = setup_torch
    configs = [c for c in CONFIGS if c[0] == backend]
    steps, first = {}, {}
    for cfg in configs:
        name = config_name(cfg)
        steps[name] = setup(cfg, params, g)
        t0 = time.perf_counter()
        steps[name]()
        first[name] = time.perf_counter() - t0
        for _ in range(warmup - 1):
            steps[name]()
    del params
    gc.collect()
    times = {name: [] for name in steps}
    acct = {name: dict(own=0.0, busy=0.0, wall=0.0, flt=0) for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            flt0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            b0, o0, w0 = (
                base.cpu_busy_s(),
                base.own_cpu_s(),
                time.perf_counter(),
            )
            for _ in range(steps_per_round):
                t = time.perf_counter()
                step()
                times[name].append((time.perf_counter() - t) * 1e3)
            b1, o1, w1 = (
                base.cpu_busy_s(),
                base.own_cpu_s(),
                time.perf_counter(),
            )
            a = acct[name]
            a["own"] += o1 - o0
            a["busy"] += b1 - b0
            a["wall"] += w1 - w0
            a["flt"] += (
                resource.getrusage(resource.RUSAGE_SELF).ru_minflt - flt0
            )
    for cfg in configs:
        name = config_name(cfg)
        arr = np.asarray(times[name])
        a = acct[name]
        print(
            "RESULT "
            + json.dumps(
                dict(
                    config=name,
                    backend=cfg[0],
                    impl=cfg[1],
                    opt=cfg[2],
                    variant=cfg[3],
                    repeat=repeat,
                    bytes_per_step=floor_bytes(cfg[2]),
                    bytes_state_only=floor_bytes_state_only(cfg[2]),
                    median_ms=float(np.median(arr)),
                    p10_ms=float(np.percentile(arr, 10)),
                    p90_ms=float(np.percentile(arr, 90)),
                    first_call_s=first[name],
                    own_cores=a["own"] / a["wall"],
                    foreign_cores=max(a["busy"] - a["own"], 0.0) / a["wall"],
                    minflt_per_step=a["flt"] / len(arr),
                    times_ms=[round(t, 4) for t in times[name]],
                )
            ),
            flush=True,
        )


# ---------------------------------------------------------------------------
# Parent: run, aggregate, render.
# ---------------------------------------------------------------------------


def nice_kwargs(nice):
    """subprocess.run arguments that run the child at nice `nice`.

    As optimizer_step.py: a new session, whose autogroup nice is set too
    (with kernel.sched_autogroup_enabled=1 a plain nice value only counts
    inside its session). Negative values need root.
    """
    if nice is None:
        return {}

    def preexec():
        try:
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(nice))
        except OSError:
            pass
        os.setpriority(os.PRIO_PROCESS, 0, nice)

    return dict(preexec_fn=preexec, start_new_session=True)


def run_suite(args):
    suite = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    commit = optimizer_memory.checkout()
    mode = "a" if args.append else "w"
    with open(args.out, mode) as out:
        for repeat in range(args.repeats):
            for backend in BACKENDS:
                env = dict(os.environ)
                env.update(
                    KERAS_BACKEND=backend,
                    OMP_NUM_THREADS=str(THREADS),
                    MKL_NUM_THREADS=str(THREADS),
                    TF_CPP_MIN_LOG_LEVEL="2",
                    JAX_PLATFORMS="cpu",
                    PYTHONWARNINGS="ignore",
                )
                cmd = [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--child",
                    backend,
                    "--rounds",
                    str(args.rounds),
                    "--steps-per-round",
                    str(args.steps_per_round),
                    "--warmup",
                    str(args.warmup),
                    "--repeat",
                    str(repeat),
                ]
                t0 = time.perf_counter()
                proc = subprocess.run(
                    cmd,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=900,
                    **nice_kwargs(args.nice),
                )
                n = 0
                for line in proc.stdout.splitlines():
                    if line.startswith("RESULT "):
                        row = json.loads(line[len("RESULT ") :])
                        row["suite"] = suite
                        row["commit"] = commit
                        row["nice"] = args.nice
                        out.write(json.dumps(row) + "\n")
                        n += 1
                out.flush()
                print(
                    f"repeat {repeat} {backend}: {n} rows, "
                    f"{time.perf_counter() - t0:.0f} s, rc {proc.returncode}",
                    file=sys.stderr,
                    flush=True,
                )
                if proc.returncode:
                    print(proc.stderr[-3000:], file=sys.stderr)


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
}


def render(rows):
    agg = aggregate(rows)
    floor = agg["torch-floor-floor"]
    gbps = floor_bytes("floor") / (floor["median_ms"] * 1e-3) / 1e9

    def floor_ms(nbytes):
        return nbytes / (gbps * 1e9) * 1e3

    suites = sorted({r.get("suite", "?") for r in rows})
    runs = max(e["runs"] for e in agg.values())
    r0 = rows[0]
    lines = [
        "# Optimizer step on CPU: SGD-SaI and SinkGD vs SGD, AdamW and "
        "pytorch_optimizer",
        "",
        *optimizer_memory.machine_lines(
            sorted({r["commit"] for r in rows if "commit" in r})
        ),
        f"- benchmark processes at nice {r0.get('nice')}; suite run id(s) "
        f"{', '.join(suites)}; {runs} process(es) per "
        f"backend, interleaved; each process times every configuration of "
        f"its backend round-robin, {len(r0['times_ms'])} timed steps per "
        f"configuration and process after 5 warm-up steps",
        f"- 50 float32 tensors, {N_PARAMS:,} parameters ({N_MATRIX:,} in "
        f"rank >= 2 tensors, {N_VECTOR:,} in rank-1), the set of "
        "optimizer_step.py; 2 threads",
        f"- SGD lr {SGD_LR}, momentum {MOMENTUM}, no decay; AdamW lr "
        f"{ADAMW_LR}, weight_decay {WEIGHT_DECAY}; SGDSaI (ours and "
        f"pytorch_optimizer) lr {SAI_LR}, momentum {MOMENTUM}, "
        f"weight_decay {WEIGHT_DECAY}; SinkGD lr {SINK_LR}, weight_decay "
        f"{WEIGHT_DECAY}, default routing (every rank-1 tensor to AdamW)",
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
    for opt in ("sgdsai", "sinkgd5", "sinkgd1"):
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


NOTES_HEADING = "## What the numbers show"


def write_keeping_notes(text, path):
    """Writes the rendered table `text` to `path`, keeping the hand-written
    notes (from NOTES_HEADING on) of the file it replaces."""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        index = old.find(NOTES_HEADING)
        if index >= 0:
            text += "\n" + old[index:]
    with open(path, "w") as f:
        f.write(text)
    return text


def write_markdown(rows, path):
    return write_keeping_notes(render(rows), path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps-per-round", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--out",
        default=os.path.join(
            REPO_ROOT, "benchmarks", "results", "optimizer_step_new_cpu.jsonl"
        ),
    )
    parser.add_argument("--append", action="store_true")
    parser.add_argument(
        "--nice",
        type=int,
        default=None,
        help="nice value of the benchmark processes (negative needs root)",
    )
    parser.add_argument("--table-only", default=None, metavar="FILE.jsonl")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(
            args.child,
            args.warmup,
            args.rounds,
            args.steps_per_round,
            args.repeat,
        )
        return
    if args.table_only:
        path = args.table_only
    else:
        run_suite(args)
        path = args.out
    rows = [json.loads(x) for x in open(path) if x.strip()]
    print(write_markdown(rows, os.path.splitext(path)[0] + ".md"))


if __name__ == "__main__":
    main()
