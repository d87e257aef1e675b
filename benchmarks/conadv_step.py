"""ConAdv training step vs the plain step, end to end, per backend.

Times one training step (`model.train_on_batch`, the compiled
`train_function` that `fit` runs, on one batch of 128) of the same model
trained with `keras_batchopt.optimizers.Lars`, plain and wired with
`keras_batchopt.strategies.enable_concurrent_adversarial_training` (one
input gradient at the stale weights, then one forward/backward pass over
the clean and adversarial batch of 256 rows). Both are built from the same
seed.

Backends, as `fit` runs them: JAX (`jit_compile` auto = `jax.jit`),
TensorFlow graph (`jit_compile=False`, what "auto" gives on a CPU-only
machine) and TensorFlow XLA (`jit_compile=True`), torch (eager).

Models: a small CNN on 32x32x3 (three 3x3 convolutions with pooling) and
an MLP 784-512-512-10.

One process per (backend, model) (`harness.suite`); inside it both steps
are warmed up, then timed round-robin for `--rounds` rounds of `--steps`
steps. Per round the mean step time is taken; the table gives the median
over all rounds of all processes (`--repeats` processes per configuration,
interleaved) and the median single step. Target: ConAdv <= 2.2x plain
(an adversarial step that ran sequentially would cost about 3x: input
gradient, then a doubled batch).

Usage (from the repository root):

    python benchmarks/conadv_step.py --repeats 3 --rounds 3 --steps 8
    python benchmarks/conadv_step.py --quick --backend jax --only mlp
    python benchmarks/conadv_step.py \
        --render-only benchmarks/results/conadv_step_cpu.jsonl
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
LR = 0.1
# (name, backend, jit_compile)
VARIANTS = [
    ("jax", "jax", "auto"),
    ("tf-graph", "tensorflow", False),
    ("tf-xla", "tensorflow", True),
    ("torch", "torch", "auto"),
]
MODELS = ("cnn", "mlp")
OPTIMIZERS = ("plain", "conadv")
OPT_LABELS = {"plain": "LARS, plain step", "conadv": "LARS + ConAdv step"}
TARGET = 2.2


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


def make_model(kind, name):
    import keras_batchopt

    model = build_model(kind)
    if name == "conadv":
        keras_batchopt.strategies.enable_concurrent_adversarial_training(
            model, epsilon=1.0 / 255.0
        )
    return model


def run_child(
    variant, kind, warmup, rounds, steps, repeat, batch=BATCH, device="cpu"
):
    backend = dict((v[0], v[1]) for v in VARIANTS)[variant]
    jit = dict((v[0], v[2]) for v in VARIANTS)[variant]
    train_step_timing.set_threads(backend, THREADS)
    import keras

    import keras_batchopt

    def build(opt):
        model = make_model(kind, opt)
        model.compile(
            optimizer=keras_batchopt.optimizers.Lars(LR),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit,
        )
        return model

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
        f"conadv_step: {args.repeats} process(es) per (variant, model), "
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
        "# ConAdv training step vs the plain step on "
        + r0.get("device", "cpu").upper(),
        "",
        *md.recorded_lines(rows, keep_from),
        md.checkout_line(rows),
        f"- suite run id(s) {', '.join(suites)}; benchmark processes at "
        f"nice {r0.get('nice')}; {len(agg[r0['config']])} process(es) per "
        f"(backend, model), each timing its 2 steps round-robin, "
        f"{steps} round(s) of {len(r0['times_ms']) // steps} steps after "
        f"{r0.get('warmup', 5)} warm-up steps",
        f"- `model.train_on_batch` on one fixed batch of "
        f"{r0.get('batch', BATCH)}; both models built from seed 0; "
        f"LARS lr {LR}, defaults otherwise; ConAdv epsilon 1/255, equal "
        "weights; sparse categorical cross-entropy",
        "- models: CNN 32x32x3 -> Conv16 -> pool -> Conv32 -> pool -> "
        "Conv32 -> GAP -> Dense10 (3x3 kernels, ReLU); MLP 784-512-512-10",
        "",
        "ms/step = median over rounds (all processes) of the round's mean "
        "step. ratio = ms/step over the plain step's on the same backend "
        f"and model. Target: ConAdv <= {TARGET}x plain.",
        "",
        "| backend | jit_compile | model | params | optimizer | ms/step | "
        "round min..max | median single step ms | ratio to plain | "
        "1st call s | own cores | other procs, cores (max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for variant, _, _ in VARIANTS:
        for kind in MODELS:
            plain = None
            for opt in OPTIMIZERS:
                rs = agg.get(f"{variant}-{kind}-{opt}")
                if not rs:
                    continue
                means = [m for r in rs for m in r["round_mean_ms"]]
                ms = float(np.median(means))
                single = float(
                    np.median([t for r in rs for t in r["times_ms"]])
                )
                if opt == "plain":
                    plain = ms
                ratio = ms / plain if plain else float("nan")
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
                if opt != "plain":
                    target = "met" if ratio <= TARGET else "NOT met"
                    verdicts.append(
                        f"- {variant} {kind}: {ratio:.2f}x the plain step "
                        f"-> {target}"
                    )
    lines += [
        "",
        f"## Target (ConAdv step <= {TARGET}x the plain step)",
        "",
        *verdicts,
        "",
    ]
    return "\n".join(lines)


def parse(argv=None):
    p = cli.parser(
        __doc__.split("\n")[0], "conadv_step_{device}.jsonl", repeats=3
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
