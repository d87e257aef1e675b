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

import sys

from harness import cli
from harness import train_step_timing
from harness.train_step_timing import BATCH

LR = 0.1
OPTIMIZERS = ("plain", "conadv")
OPT_LABELS = {"plain": "LARS, plain step", "conadv": "LARS + ConAdv step"}
TARGET = 2.2


def make_model(kind, name):
    import keras_batchopt

    model = train_step_timing.build_model(kind)
    if name == "conadv":
        keras_batchopt.strategies.enable_concurrent_adversarial_training(
            model, epsilon=1.0 / 255.0
        )
    return model


def compiled_model(opt, kind, jit):
    import keras

    import keras_batchopt

    model = make_model(kind, opt)
    model.compile(
        optimizer=keras_batchopt.optimizers.Lars(LR),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    return model


def run_suite(args, path):
    return train_step_timing.run_suite(__file__, args, path)


def plan(args):
    return train_step_timing.plan("conadv_step", args)


def render(rows, keep_from=None):
    r0 = rows[0]
    table, ratios = train_step_timing.table(
        rows, OPTIMIZERS, OPT_LABELS, "plain", "plain"
    )
    lines = [
        *train_step_timing.run_lines(
            rows,
            keep_from,
            "ConAdv training step vs the plain step",
            "its 2 steps",
        ),
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
        *table,
    ]
    verdicts = [
        f"- {variant} {kind}: {ratio:.2f}x the plain step -> "
        + ("met" if ratio <= TARGET else "NOT met")
        for variant, kind, _, ratio in ratios
    ]
    lines += [
        "",
        f"## Target (ConAdv step <= {TARGET}x the plain step)",
        "",
        *verdicts,
        "",
    ]
    return "\n".join(lines)


def parse(argv=None):
    return train_step_timing.parse(
        argv, __doc__.split("\n")[0], "conadv_step_{device}.jsonl"
    )


def main(argv=None):
    args = parse(argv)
    if args.child:
        train_step_timing.run_child(args, OPTIMIZERS, compiled_model)
        return 0
    backends = sorted({backend for backend, _ in train_step_timing.units(args)})
    return cli.main(args, backends, run_suite, render, plan)


if __name__ == "__main__":
    sys.exit(main())
