"""Round-robin timing of `model.train_on_batch` for a few compiled models.

Shared by the scripts that compare one training step against another on
the same backend and model (`ada_hessian_step.py`, `conadv_step.py`):
every model is built and warmed up, then all are timed round-robin for
`rounds` rounds of `steps` steps, with the CPU accounting of each timed
loop, and one row per model is emitted to the parent. The scripts also
share their variants (backend, jit_compile), models (a small CNN and an
MLP), data, child processes and options from here.
"""

import argparse
import time

from harness import cli
from harness import machine
from harness import process
from harness import suite


def set_threads(backend, threads):
    """Limits TensorFlow's or torch's thread pools (before any model)."""
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    elif backend == "torch":
        import torch

        torch.set_num_threads(threads)


def _warm_up(names, build, x, y, warmup):
    """Builds every model; times its first call, then warms it up."""
    models, first = {}, {}
    for name in names:
        model = build(name)
        t0 = time.perf_counter()
        model.train_on_batch(x, y)
        first[name] = time.perf_counter() - t0
        for _ in range(warmup - 1):
            model.train_on_batch(x, y)
        models[name] = model
    return models, first


def _time_rounds(models, x, y, rounds, steps):
    """Per model: round means (ms), all step times (ms), own CPU s, busy
    CPU s (all processes) and wall s of the timed loops."""
    import numpy as np

    stats = {
        name: dict(per_round=[], times=[], own=0.0, busy=0.0, wall=0.0)
        for name in models
    }
    for _ in range(rounds):
        for name, model in models.items():
            s = stats[name]
            b0, o0 = machine.cpu_busy_s(), machine.own_cpu_s()
            w0 = time.perf_counter()
            ts = []
            for _ in range(steps):
                t = time.perf_counter()
                model.train_on_batch(x, y)
                ts.append((time.perf_counter() - t) * 1e3)
            b1, o1 = machine.cpu_busy_s(), machine.own_cpu_s()
            w1 = time.perf_counter()
            s["own"] += o1 - o0
            s["busy"] += b1 - b0
            s["wall"] += w1 - w0
            s["times"] += ts
            s["per_round"].append(float(np.mean(ts)))
    return stats


def run(names, build, x, y, warmup, rounds, steps, fields):
    """Builds, warms up and times the models `build(name)` returns for
    each of `names` (compiled, ready for `train_on_batch(x, y)`), then
    emits one row per name: `fields` plus `config` (`fields["config"]`
    joined to the name), `opt`, the parameter count of the first model
    and the timings."""
    import keras
    import numpy as np

    models, first = _warm_up(names, build, x, y, warmup)
    n_params = models[names[0]].count_params()
    stats = _time_rounds(models, x, y, rounds, steps)
    for name in names:
        s = stats[name]
        iterations = int(
            keras.ops.convert_to_numpy(models[name].optimizer.iterations)
        )
        process.emit(
            dict(
                fields,
                config=f"{fields['config']}-{name}",
                opt=name,
                n_params=n_params,
                round_mean_ms=s["per_round"],
                median_step_ms=float(np.median(s["times"])),
                first_call_s=first[name],
                own_cores=s["own"] / s["wall"],
                foreign_cores=max(s["busy"] - s["own"], 0.0) / s["wall"],
                iterations=iterations,
                times_ms=[round(t, 3) for t in s["times"]],
            )
        )


# ------------------------------------------------- the scripts' shared setup

THREADS = 2
BATCH = 128
QUICK_BATCH = 16
# (name, backend, jit_compile)
VARIANTS = [
    ("jax", "jax", "auto"),
    ("tf-graph", "tensorflow", False),
    ("tf-xla", "tensorflow", True),
    ("torch", "torch", "auto"),
]
MODELS = ("cnn", "mlp")


def build_model(kind):
    """The CNN on 32x32x3 or the MLP 784-512-512-10, from seed 0."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    if kind == "cnn":
        model = keras.Sequential(
            [
                keras.Input((32, 32, 3)),
                layers.Conv2D(16, 3, padding="same", activation="relu"),
                layers.MaxPooling2D(),
                layers.Conv2D(32, 3, padding="same", activation="relu"),
                layers.MaxPooling2D(),
                layers.Conv2D(32, 3, padding="same", activation="relu"),
                layers.GlobalAveragePooling2D(),
                layers.Dense(10),
            ]
        )
    else:
        model = keras.Sequential(
            [
                keras.Input((784,)),
                layers.Dense(512, activation="relu"),
                layers.Dense(512, activation="relu"),
                layers.Dense(10),
            ]
        )
    return model


def data(kind, batch=BATCH):
    """One fixed batch of inputs and 10-class labels, from seed 0."""
    import numpy as np

    rng = np.random.default_rng(0)
    shape = (batch, 32, 32, 3) if kind == "cnn" else (batch, 784)
    x = rng.standard_normal(shape, dtype=np.float32)
    y = rng.integers(0, 10, size=(batch,)).astype("int32")
    return x, y


def run_child(args, names, compiled_model):
    """The child of (`args.child` variant, `args.model` kind): times the
    models `compiled_model(name, kind, jit_compile)` returns for `names`."""
    variant, kind = args.child, args.model
    backend = dict((v[0], v[1]) for v in VARIANTS)[variant]
    jit = dict((v[0], v[2]) for v in VARIANTS)[variant]
    batch = QUICK_BATCH if args.quick else BATCH
    set_threads(backend, THREADS)
    run(
        names,
        lambda name: compiled_model(name, kind, jit),
        *data(kind, batch),
        args.warmup,
        args.rounds,
        args.steps,
        dict(
            config=f"{variant}-{kind}",
            variant=variant,
            backend=backend,
            jit_compile=str(jit),
            model=kind,
            repeat=args.repeat,
            batch=batch,
            warmup=args.warmup,
            device=args.device,
        ),
    )


def units(args):
    """(backend, "variant-model") per selected configuration."""
    chosen = cli.selected_backends(args)
    variants = VARIANTS
    if args.device == "cuda":
        variants = [v for v in VARIANTS if v[1] != "tensorflow"]
    out = []
    for variant, backend, _ in variants:
        for kind in MODELS:
            label = f"{variant}-{kind}"
            if backend not in chosen or (args.only and args.only not in label):
                continue
            out.append((backend, label))
    return out


def run_suite(script, args, path):
    """Runs `script`'s children, `--repeats` per configuration."""

    def argv(backend, label, repeat):
        variant, kind = label.rsplit("-", 1)
        out = [script, "--child", variant, "--model", kind]
        out += ["--rounds", str(args.rounds), "--steps", str(args.steps)]
        out += ["--warmup", str(args.warmup), "--repeat", str(repeat)]
        out += ["--device", args.device]
        return out + (["--quick"] if args.quick else [])

    return suite.run(args, path, units(args), argv, threads=THREADS)


def parse(argv, description, default_output, steps_multiple=1):
    """The shared options and `--rounds`, `--steps` (a multiple of
    `steps_multiple`), `--warmup`, `--only` and the child's own."""
    p = cli.parser(description, default_output, repeats=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--only", default=None, help="substring of variant-model")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--repeat", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.rounds, args.steps = 1, 1, 4
        args.warmup, args.max_wait = 2, 0.0
    if args.steps % steps_multiple:
        p.error(f"--steps must be a multiple of {steps_multiple}")
    return args


def plan(name, args):
    """The dry-run plan of script `name`."""
    return [
        f"{name}: {args.repeats} process(es) per (variant, model), "
        f"device {args.device}, {args.rounds} rounds of {args.steps} steps "
        f"after {args.warmup} warm-up steps, batch "
        f"{QUICK_BATCH if args.quick else BATCH}:",
        "  " + ", ".join(label for _, label in units(args)),
    ]


def by_config(rows):
    """The rows grouped by their `config` ("variant-model-optimizer")."""
    grouped = {}
    for r in rows:
        grouped.setdefault(r["config"], []).append(r)
    return grouped


def run_lines(rows, keep_from, title, timed):
    """The table's title and how it was measured; `timed` names what each
    process times round-robin ("its 2 steps")."""
    from harness import render as md

    grouped = by_config(rows)
    suites = sorted({r.get("suite", "?") for r in rows})
    r0 = rows[0]
    steps = len(r0["round_mean_ms"])
    return [
        f"# {title} on " + r0.get("device", "cpu").upper(),
        "",
        *md.recorded_lines(rows, keep_from),
        md.checkout_line(rows),
        f"- suite run id(s) {', '.join(suites)}; benchmark processes at "
        f"nice {r0.get('nice')}; {len(grouped[r0['config']])} process(es) "
        f"per (backend, model), each timing {timed} round-robin, "
        f"{steps} round(s) of {len(r0['times_ms']) // steps} steps after "
        f"{r0.get('warmup', 5)} warm-up steps",
    ]


TABLE_HEADER = [
    "| backend | jit_compile | model | params | optimizer | ms/step | "
    "round min..max | median single step ms | ratio to {baseline} | "
    "1st call s | own cores | other procs, cores (max) |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
]


def table(rows, optimizers, labels, baseline, baseline_name):
    """The table (header first) of every (variant, model, optimizer), each
    step's ratio to the `baseline` optimizer's on the same variant and
    model; and `(variant, model, optimizer, ratio)` of the others."""
    import numpy as np

    grouped = by_config(rows)
    lines = [TABLE_HEADER[0].format(baseline=baseline_name), TABLE_HEADER[1]]
    ratios = []
    for variant, _, _ in VARIANTS:
        for kind in MODELS:
            reference = None
            for opt in optimizers:
                rs = grouped.get(f"{variant}-{kind}-{opt}")
                if not rs:
                    continue
                means = [m for r in rs for m in r["round_mean_ms"]]
                ms = float(np.median(means))
                single = float(
                    np.median([t for r in rs for t in r["times_ms"]])
                )
                if opt == baseline:
                    reference = ms
                ratio = ms / reference if reference else float("nan")
                e = rs[0]
                lines.append(
                    f"| {e['backend']} | {e['jit_compile']} | {kind} | "
                    f"{e['n_params']:,} | {labels[opt]} | **{ms:.1f}** | "
                    f"{min(means):.1f}..{max(means):.1f} | {single:.1f} | "
                    f"{ratio:.2f} | "
                    f"{np.median([r['first_call_s'] for r in rs]):.2f} | "
                    f"{np.median([r['own_cores'] for r in rs]):.2f} | "
                    f"{max(r['foreign_cores'] for r in rs):.2f} |"
                )
                if opt != baseline:
                    ratios.append((variant, kind, opt, ratio))
    return lines, ratios
