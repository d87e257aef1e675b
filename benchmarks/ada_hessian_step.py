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

import sys

from harness import cli
from harness import train_step_timing
from harness.train_step_timing import BATCH

LR = 1e-3
# The AdaHessian step (interval 1) at most this many times Adam's (issue 19).
TARGET = 2.0
OPTIMIZERS = ("adam", "adahessian", "adahessian-every4")
OPT_LABELS = {
    "adam": "keras Adam",
    "adahessian": "AdaHessian",
    "adahessian-every4": "AdaHessian(hessian_update_interval=4)",
}


def make_optimizer(name):
    import keras

    import keras_batchopt

    if name == "adam":
        return keras.optimizers.Adam(LR)
    interval = 4 if name.endswith("every4") else 1
    return keras_batchopt.optimizers.AdaHessian(
        LR, hessian_update_interval=interval, seed=0
    )


def compiled_model(opt, kind, jit):
    import keras

    import keras_batchopt

    model = keras_batchopt.curvature.enable_hessian_training(
        train_step_timing.build_model(kind)
    )
    model.compile(
        optimizer=make_optimizer(opt),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    return model


def run_suite(args, path):
    return train_step_timing.run_suite(__file__, args, path)


def plan(args):
    return train_step_timing.plan("ada_hessian_step", args)


def render(rows, keep_from=None):
    r0 = rows[0]
    table, ratios = train_step_timing.table(
        rows, OPTIMIZERS, OPT_LABELS, "adam", "Adam"
    )
    lines = [
        *train_step_timing.run_lines(
            rows,
            keep_from,
            "AdaHessian training step vs Adam's",
            "its 3 optimizers",
        ),
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
        f"(interval 1) <= {TARGET}x Adam.",
        "",
        *table,
    ]
    verdicts = [
        f"- {variant} {kind}, {OPT_LABELS[opt]}: {ratio:.2f}x Adam -> "
        + ("met" if ratio <= TARGET else "NOT met")
        for variant, kind, opt, ratio in ratios
    ]
    lines += [
        "",
        f"## Target (AdaHessian step <= {TARGET}x Adam's; interval-4 rows for "
        "reference)",
        "",
        *verdicts,
        "",
    ]
    return "\n".join(lines)


def parse(argv=None):
    # A multiple of 4: every round of an interval-4 model holds
    # steps / 4 refresh steps, whatever its phase.
    return train_step_timing.parse(
        argv,
        __doc__.split("\n")[0],
        "ada_hessian_step_{device}.jsonl",
        steps_multiple=4,
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
