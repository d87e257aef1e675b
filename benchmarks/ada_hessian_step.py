"""AdaHessian training step vs Adam's, end to end, per backend.

Times one training step (`model.train_on_batch`, the compiled
`train_function` that `fit` runs, on one batch of 128) of the same model
with `keras.optimizers.Adam`, `keras_batchopt.optimizers.AdaHessian` (one
Hessian-vector product per step) and `AdaHessian(hessian_update_interval=4)`
(one every 4 steps). Every model is wired with
`keras_batchopt.curvature.enable_hessian_training` (with Adam the wired
model runs Keras's own step) and built from the same seed.

Backends, as `fit` runs them: JAX (`jit_compile` auto = `jax.jit`),
TensorFlow graph (`jit_compile=False`, what "auto" gives on a CPU-only
machine) and TensorFlow XLA (`jit_compile=True`), torch (eager).

Models: a small CNN on 32x32x3 (three 3x3 convolutions with pooling, so
AdaHessian's spatial averaging of convolution kernels runs) and an MLP
784-512-512-10.

One process per (backend, model) (`harness.suite`); inside it every
optimizer is warmed up, then timed round-robin for `--rounds` rounds of
`--steps` steps (a multiple of 4, so the interval-4 row averages whole
refresh cycles). Per
round the mean step time is taken; the table gives the median over all
rounds of all processes (`--repeats` processes per configuration,
interleaved) and the median single step.

Usage (from the repository root):

    python benchmarks/ada_hessian_step.py --repeats 3 --rounds 3 --steps 8
    python benchmarks/ada_hessian_step.py --quick --backend jax --only mlp
    python benchmarks/ada_hessian_step.py \
        --render-only benchmarks/results/ada_hessian_step_cpu.jsonl
"""

import argparse
import sys

from harness import cli
from harness import render as md
from harness import suite
from harness import train_step_timing

THREADS = 2
BATCH = 128
QUICK_BATCH = 16
LR = 1e-3
# (name, backend, jit_compile)
VARIANTS = [
    ("jax", "jax", "auto"),
    ("tf-graph", "tensorflow", False),
    ("tf-xla", "tensorflow", True),
    ("torch", "torch", "auto"),
]
MODELS = ("cnn", "mlp")
OPTIMIZERS = ("adam", "adahessian", "adahessian-every4")
OPT_LABELS = {
    "adam": "keras Adam",
    "adahessian": "AdaHessian",
    "adahessian-every4": "AdaHessian(hessian_update_interval=4)",
}


def build_model(kind):
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
    import numpy as np

    rng = np.random.default_rng(0)
    shape = (batch, 32, 32, 3) if kind == "cnn" else (batch, 784)
    x = rng.standard_normal(shape, dtype=np.float32)
    y = rng.integers(0, 10, size=(batch,)).astype("int32")
    return x, y


def make_optimizer(name):
    import keras

    import keras_batchopt

    if name == "adam":
        return keras.optimizers.Adam(LR)
    interval = 4 if name.endswith("every4") else 1
    return keras_batchopt.optimizers.AdaHessian(
        LR, hessian_update_interval=interval, seed=0
    )


def run_child(
    variant, kind, warmup, rounds, steps, repeat, batch=BATCH, device="cpu"
):
    backend = dict((v[0], v[1]) for v in VARIANTS)[variant]
    jit = dict((v[0], v[2]) for v in VARIANTS)[variant]
    train_step_timing.set_threads(backend, THREADS)
    import keras

    import keras_batchopt

    def build(opt):
        model = keras_batchopt.curvature.enable_hessian_training(
            build_model(kind)
        )
        model.compile(
            optimizer=make_optimizer(opt),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit,
        )
        return model

    # `steps` is a multiple of 4: every round of an interval-4 model
    # holds steps / 4 refresh steps, whatever its phase.
    train_step_timing.run(
        OPTIMIZERS,
        build,
        *data(kind, batch),
        warmup,
        rounds,
        steps,
        dict(
            config=f"{variant}-{kind}",
            variant=variant,
            backend=backend,
            jit_compile=str(jit),
            model=kind,
            repeat=repeat,
            batch=batch,
            warmup=warmup,
            device=device,
        ),
    )


def _variants(args):
    if args.device == "cuda":
        return [v for v in VARIANTS if v[1] != "tensorflow"]
    return VARIANTS


def _units(args):
    chosen = cli.selected_backends(args)
    units = []
    for variant, backend, _ in _variants(args):
        for kind in MODELS:
            label = f"{variant}-{kind}"
            if backend not in chosen or (args.only and args.only not in label):
                continue
            units.append((backend, label))
    return units


def run_suite(args, path):
    def argv(backend, label, repeat):
        variant, kind = label.rsplit("-", 1)
        out = [__file__, "--child", variant, "--model", kind]
        out += ["--rounds", str(args.rounds), "--steps", str(args.steps)]
        out += ["--warmup", str(args.warmup), "--repeat", str(repeat)]
        out += ["--device", args.device]
        return out + (["--quick"] if args.quick else [])

    return suite.run(args, path, _units(args), argv, threads=THREADS)


def plan(args):
    return [
        f"ada_hessian_step: {args.repeats} process(es) per (variant, model), "
        f"device {args.device}, {args.rounds} rounds of {args.steps} steps "
        f"after {args.warmup} warm-up steps, batch "
        f"{QUICK_BATCH if args.quick else BATCH}:",
        "  " + ", ".join(label for _, label in _units(args)),
    ]


def render(rows, keep_from=None):
    import numpy as np

    agg = {}
    for r in rows:
        agg.setdefault(r["config"], []).append(r)
    suites = sorted({r.get("suite", "?") for r in rows})
    r0 = rows[0]
    steps = len(r0["round_mean_ms"])
    lines = [
        "# AdaHessian training step vs Adam's on "
        + r0.get("device", "cpu").upper(),
        "",
        *md.recorded_lines(rows, keep_from),
        md.checkout_line(rows),
        f"- suite run id(s) {', '.join(suites)}; benchmark processes at "
        f"nice {r0.get('nice')}; {len(agg[r0['config']])} process(es) per "
        f"(backend, model), each timing its 3 optimizers round-robin, "
        f"{steps} round(s) of {len(r0['times_ms']) // steps} steps after "
        f"{r0.get('warmup', 5)} warm-up steps",
        f"- `model.train_on_batch` on one fixed batch of "
        f"{r0.get('batch', BATCH)}; every "
        "model wired with `enable_hessian_training` and built from seed 0; "
        f"lr {LR}; AdaHessian defaults otherwise (spatial averaging, one "
        "Rademacher probe per refresh); sparse categorical cross-entropy",
        "- models: CNN 32x32x3 -> Conv16 -> pool -> Conv32 -> pool -> "
        "Conv32 -> GAP -> Dense10 (3x3 kernels, ReLU); MLP 784-512-512-10",
        "",
        "ms/step = median over rounds (all processes) of the round's mean "
        "step; the interval-4 rows average whole refresh cycles (1 step "
        "with a Hessian-vector product, 3 without). ratio = ms/step over "
        "Adam's on the same backend and model. Target: AdaHessian "
        "(interval 1) <= 2.5x Adam.",
        "",
        "| backend | jit_compile | model | params | optimizer | ms/step | "
        "round min..max | median single step ms | ratio to Adam | "
        "1st call s | own cores | other procs, cores (max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for variant, _, _ in VARIANTS:
        for kind in MODELS:
            adam = None
            for opt in OPTIMIZERS:
                rs = agg.get(f"{variant}-{kind}-{opt}")
                if not rs:
                    continue
                means = [m for r in rs for m in r["round_mean_ms"]]
                ms = float(np.median(means))
                single = float(
                    np.median([t for r in rs for t in r["times_ms"]])
                )
                if opt == "adam":
                    adam = ms
                ratio = ms / adam if adam else float("nan")
                e = rs[0]
                lines.append(
                    f"| {e['backend']} | {e['jit_compile']} | {kind} | "
                    f"{e['n_params']:,} | {OPT_LABELS[opt]} | **{ms:.1f}** | "
                    f"{min(means):.1f}..{max(means):.1f} | {single:.1f} | "
                    f"{ratio:.2f} | "
                    f"{np.median([r['first_call_s'] for r in rs]):.2f} | "
                    f"{np.median([r['own_cores'] for r in rs]):.2f} | "
                    f"{max(r['foreign_cores'] for r in rs):.2f} |"
                )
                if opt != "adam":
                    target = "met" if ratio <= 2.5 else "NOT met"
                    verdicts.append(
                        f"- {variant} {kind}, {OPT_LABELS[opt]}: "
                        f"{ratio:.2f}x Adam -> {target}"
                    )
    lines += [
        "",
        "## Target (AdaHessian step <= 2.5x Adam's; interval-4 rows for "
        "reference)",
        "",
        *verdicts,
        "",
    ]
    return "\n".join(lines)


def parse(argv=None):
    p = cli.parser(
        __doc__.split("\n")[0], "ada_hessian_step_{device}.jsonl", repeats=3
    )
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
    if args.steps % 4:
        p.error("--steps must be a multiple of 4")
    return args


def main(argv=None):
    args = parse(argv)
    if args.child:
        run_child(
            args.child,
            args.model,
            args.warmup,
            args.rounds,
            args.steps,
            args.repeat,
            QUICK_BATCH if args.quick else BATCH,
            args.device,
        )
        return 0
    backends = sorted({backend for backend, _ in _units(args)})
    return cli.main(args, backends, run_suite, render, plan)


if __name__ == "__main__":
    sys.exit(main())
