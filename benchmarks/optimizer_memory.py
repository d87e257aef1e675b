"""Optimizer-state bytes of keras_batchopt's and Keras's optimizers.

Builds two real architectures (a small ResNet-style CNN for 32x32x3 and a
small transformer encoder with a token-level output head), builds each
optimizer on the model's trainable variables, and sums the bytes of the
optimizer's own variables.

Counting rule: the sum of `size * itemsize` over `optimizer.variables`,
minus the two scalar bookkeeping variables every Keras optimizer has (the
iteration counter `iteration` and the `learning_rate` variable). Every
other variable counts, scalars included (SGD-SaI's per-variable gSNR
scalars are state). Parameter bytes are the same sum over
`model.trainable_variables` (non-trainable BatchNormalization statistics
are not optimized and are left out). Nothing is trained; the state does not
depend on the data or on the backend (run on one backend, JAX by default).

One JSON line per (model, optimizer) goes to
`benchmarks/results/optimizer_memory.jsonl` and the table next to it
(`harness.render`).

Usage (from the repository root):

    python benchmarks/optimizer_memory.py
    python benchmarks/optimizer_memory.py --quick
    python benchmarks/optimizer_memory.py \
        --render-only benchmarks/results/optimizer_memory.jsonl
"""

import os
import sys

from harness import cli
from harness import process
from harness import render as md

BOOKKEEPING = ("iteration", "learning_rate")
MODELS = (
    "ResNet-style CNN (32x32x3, 3 stages x 2 blocks, 10 classes)",
    "Transformer encoder (vocab 8000, seq 128, d 256, 4 heads, 2 blocks, "
    "token-level head)",
)
# --quick: the same CNN, a tiny encoder.
QUICK_ENCODER = dict(vocab=500, seq=16, dim=32, heads=4, blocks=1)
QUICK_NAME = (
    "Transformer encoder (--quick: vocab 500, seq 16, d 32, 4 heads, 1 "
    "block, token-level head)"
)


def nbytes(variables):
    import numpy as np

    total = 0
    for v in variables:
        size = int(np.prod(v.shape)) if len(v.shape) else 1
        total += size * np.dtype(v.dtype).itemsize
    return total


def state_bytes(optimizer):
    return nbytes(
        v
        for v in optimizer.variables
        if v.name.split("/")[-1] not in BOOKKEEPING
    )


def resnet_cnn():
    """ResNet-style CNN for 32x32x3: stem + 3 stages of 2 basic blocks."""
    import keras
    from keras import layers

    def block(x, filters, stride, name):
        shortcut = x
        y = layers.Conv2D(
            filters,
            3,
            strides=stride,
            padding="same",
            use_bias=False,
            name=f"{name}_conv1",
        )(x)
        y = layers.BatchNormalization(name=f"{name}_bn1")(y)
        y = layers.ReLU()(y)
        y = layers.Conv2D(
            filters, 3, padding="same", use_bias=False, name=f"{name}_conv2"
        )(y)
        y = layers.BatchNormalization(name=f"{name}_bn2")(y)
        if stride != 1 or shortcut.shape[-1] != filters:
            shortcut = layers.Conv2D(
                filters,
                1,
                strides=stride,
                use_bias=False,
                name=f"{name}_proj",
            )(shortcut)
            shortcut = layers.BatchNormalization(name=f"{name}_bnp")(shortcut)
        return layers.ReLU()(layers.Add()([y, shortcut]))

    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(32, 3, padding="same", use_bias=False, name="stem")(
        inputs
    )
    x = layers.ReLU()(layers.BatchNormalization(name="stem_bn")(x))
    for stage, filters in enumerate((32, 64, 128)):
        for i in range(2):
            stride = 2 if (stage > 0 and i == 0) else 1
            x = block(x, filters, stride, f"s{stage}b{i}")
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(10, name="predictions")(x)
    return keras.Model(inputs, outputs, name="resnet_cnn")


def transformer_encoder(vocab=8000, seq=128, dim=256, heads=4, blocks=2):
    """Token + position embeddings, 2 pre-LN encoder blocks, LM head."""
    import keras
    from keras import layers

    tokens = keras.Input((seq,), dtype="int32")
    x = layers.Embedding(vocab, dim, name="token_embedding")(tokens)
    positions = layers.Embedding(seq, dim, name="position_embedding")(
        keras.ops.arange(seq)[None, :]
    )
    x = x + positions
    for b in range(blocks):
        y = layers.LayerNormalization(name=f"b{b}_ln1")(x)
        y = layers.MultiHeadAttention(
            heads, dim // heads, name=f"b{b}_attention"
        )(y, y)
        x = x + y
        y = layers.LayerNormalization(name=f"b{b}_ln2")(x)
        y = layers.Dense(4 * dim, activation="gelu", name=f"b{b}_ffn1")(y)
        y = layers.Dense(dim, name=f"b{b}_ffn2")(y)
        x = x + y
    x = layers.LayerNormalization(name="final_ln")(x)
    outputs = layers.Dense(vocab, name="predictions")(x)
    return keras.Model(tokens, outputs, name="transformer")


def optimizers():
    """(label, factory) for every optimizer measured."""
    import keras

    import keras_batchopt as kb

    o = kb.optimizers
    return [
        ("keras AdamW", lambda: keras.optimizers.AdamW(1e-3)),
        ("keras SGD(momentum=0.9)", lambda: keras.optimizers.SGD(0.01, 0.9)),
        ("keras_batchopt SGDSaI", lambda: o.SGDSaI()),
        ("keras_batchopt SinkGD (default routing)", lambda: o.SinkGD()),
        (
            "keras_batchopt SinkGD (exclude_layers=['predictions'])",
            lambda: o.SinkGD(exclude_layers=["predictions"]),
        ),
        ("keras_batchopt AdaHessian", lambda: o.AdaHessian()),
        ("keras_batchopt Adan", lambda: o.Adan()),
        ("keras_batchopt Lamb", lambda: o.Lamb()),
    ]


def measure(model):
    variables = model.trainable_variables
    n_params = sum(
        int(__import__("numpy").prod(v.shape)) if len(v.shape) else 1
        for v in variables
    )
    param_bytes = nbytes(variables)
    rows = []
    for label, factory in optimizers():
        opt = factory()
        opt.build(variables)
        rows.append((label, state_bytes(opt), len(opt.variables)))
    return n_params, param_bytes, rows


def sinkgd_routing(model, **kwargs):
    """Parameters routed to SinkGD and to the AdamW fallback."""
    import numpy as np

    import keras_batchopt as kb

    opt = kb.optimizers.SinkGD(**kwargs)
    opt.build(model.trainable_variables)
    sink = adamw = 0
    for v, uses_adamw in zip(model.trainable_variables, opt._uses_adamw):
        n = int(np.prod(v.shape)) if len(v.shape) else 1
        if uses_adamw:
            adamw += n
        else:
            sink += n
    return sink, adamw


def measure_rows(quick=False):
    """One row per (model, optimizer): state bytes and variable count,
    with the model's parameters and SinkGD routing."""
    import keras

    keras.utils.set_random_seed(0)
    encoder = QUICK_ENCODER if quick else {}
    names = MODELS if not quick else (MODELS[0], QUICK_NAME)
    builds = (resnet_cnn, lambda: transformer_encoder(**encoder))
    rows = []
    for name, build in zip(names, builds):
        model = build()
        n_params, param_bytes, results = measure(model)
        routing = dict(
            default=sinkgd_routing(model),
            head=sinkgd_routing(model, exclude_layers=["predictions"]),
        )
        for label, state, count in results:
            rows.append(
                dict(
                    model=name,
                    n_params=n_params,
                    param_bytes=param_bytes,
                    routing=routing,
                    optimizer=label,
                    state_bytes=state,
                    variables=count,
                    backend=keras.backend.backend(),
                )
            )
    return rows


def render(table_rows, keep_from=None):
    backend = table_rows[0]["backend"]
    out = [
        *md.header_lines(
            "Optimizer state memory on real models", table_rows, keep_from
        ),
        f"- backend used to build the optimizers: {backend} (the state "
        "does not depend on it)",
        "",
        "Rule: state bytes = sum of `size * itemsize` over "
        "`optimizer.variables`, minus the `iteration` counter and the "
        "`learning_rate` scalar (every other variable counts, the "
        "per-variable scalars of SGD-SaI included). Parameter bytes = the "
        "same sum over `model.trainable_variables` (float32).",
        "",
    ]
    results = {}
    for r in table_rows:
        entry = results.setdefault(
            r["model"], (r["n_params"], r["param_bytes"], [], r["routing"])
        )
        entry[2].append((r["optimizer"], r["state_bytes"], r["variables"]))
    for name, (n_params, param_bytes, rows, routing) in results.items():
        adamw = rows[0][1]
        out += [
            f"## {name}: {n_params:,} trainable parameters "
            f"({param_bytes / 1e6:.2f} MB)",
            "",
            f"SinkGD routing: default {routing['default'][0]:,} parameters "
            f"to Sinkhorn, {routing['default'][1]:,} to the AdamW fallback; "
            f"with `exclude_layers=['predictions']` "
            f"{routing['head'][0]:,} / {routing['head'][1]:,}.",
            "",
            "| optimizer | optimizer variables | state bytes | state MB | "
            "ratio to AdamW | ratio to parameter bytes |",
            "|---|---|---|---|---|---|",
        ]
        for label, b, count in rows:
            out.append(
                f"| {label} | {count} | {b:,} | {b / 1e6:.2f} | "
                f"{b / adamw:.3f} | {b / param_bytes:.3f} |"
            )
        by_label = {label: b for label, b, _ in rows}
        sai = by_label["keras_batchopt SGDSaI"]
        out += [
            "",
            "Claims checked: SGD-SaI's state is "
            f"{sai / adamw:.4f}x AdamW's (one momentum buffer; the "
            f"{sai - adamw // 2:,} bytes above one half are its float32 "
            "gSNR scalars, one per variable).",
        ]
        for key, label in (
            ("default", "keras_batchopt SinkGD (default routing)"),
            (
                "head",
                "keras_batchopt SinkGD (exclude_layers=['predictions'])",
            ),
        ):
            fallback = 2 * 4 * routing[key][1]
            same = "=" if by_label[label] == fallback else "!="
            out.append(
                f"SinkGD ({key}): state {by_label[label]:,} B {same} 2 x 4 B "
                f"x {routing[key][1]:,} AdamW-routed parameters "
                f"({fallback:,} B): only the fallback's m and v."
            )
        out.append("")
    return "\n".join(out)


def run(args, path):
    os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    rows = measure_rows(args.quick)
    context = process.context()
    md.append_rows(path, [dict(r, **context) for r in rows], mode="w")


def plan(args):
    return [
        f"optimizer_memory: in this process on {args.backend}, the models "
        + "; ".join(MODELS)
        + (" (tiny encoder: --quick)" if args.quick else "")
    ]


def main(argv=None):
    p = cli.parser(__doc__.split("\n")[0], "optimizer_memory.jsonl")
    p.set_defaults(backend="jax")
    args = p.parse_args(argv)
    if args.backend == "all":
        p.error("--backend: one backend (the state does not depend on it)")
    if args.device != "cpu":
        p.error("--device: this script counts bytes on the CPU only")
    return cli.main(args, [args.backend], run, render, plan)


if __name__ == "__main__":
    sys.exit(main())
