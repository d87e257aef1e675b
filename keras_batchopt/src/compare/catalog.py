"""What the compare job can train with: optimizers and normalization layers.

`OPTIMIZERS` maps a command-line name to a constructor and its default
arguments; `LAYERS` maps a name to the layers a model puts where a
`BatchNormalization` would go. A new optimizer or layer joins the job with
one entry here.
"""

import keras

from keras_batchopt import layers as batchopt_layers
from keras_batchopt import optimizers as batchopt_optimizers

# The name of the classification head in every model of the job; SinkGD
# trains this layer with its AdamW fallback, as in the paper.
HEAD_NAME = "predictions"


class OptimizerSpec:
    """One optimizer of the job.

    Attributes:
        constructor: the optimizer class.
        defaults: its constructor arguments in the job, `learning_rate`
            included.
        source: where the default learning rate comes from.
        needs_hessian: whether the model needs the Hessian training step
            (`keras_batchopt.curvature.enable_hessian_training`).
        seeded: whether the constructor takes a `seed` (the job passes the
            run's seed).
    """

    def __init__(
        self, constructor, defaults, source, needs_hessian=False, seeded=False
    ):
        self.constructor = constructor
        self.defaults = defaults
        self.source = source
        self.needs_hessian = needs_hessian
        self.seeded = seeded


# Learning rates are each method's published or official default where one
# exists for this scale of model, else the package's guides.
OPTIMIZERS = {
    "adan": OptimizerSpec(
        batchopt_optimizers.Adan,
        dict(learning_rate=5e-3, weight_decay=0.02),
        "5x AdamW's rate, as the Adan authors advise (guides/adan_optimizer)",
    ),
    "lamb": OptimizerSpec(
        batchopt_optimizers.Lamb,
        dict(learning_rate=5e-3, weight_decay=0.01),
        "guides/large_batch_training (1e-2 at batch 256, sqrt rule)",
    ),
    "lars": OptimizerSpec(
        batchopt_optimizers.Lars,
        dict(learning_rate=1.0, momentum=0.9, weight_decay=1e-4),
        "class default (timm); steps are 1e-3 of each weight's norm",
    ),
    "sgd_sai": OptimizerSpec(
        batchopt_optimizers.SGDSaI,
        dict(learning_rate=1e-2, momentum=0.9, weight_decay=1e-2),
        "official code's defaults",
    ),
    "sink_gd": OptimizerSpec(
        batchopt_optimizers.SinkGD,
        dict(learning_rate=1e-3, exclude_layers=[HEAD_NAME]),
        "class default (Adam's scale); the head trains with AdamW",
    ),
    "adagrad_norm": OptimizerSpec(
        batchopt_optimizers.AdaGradNorm,
        dict(learning_rate=1.0),
        "paper's default (Ward, Wu and Bottou)",
    ),
    "ada_hessian": OptimizerSpec(
        batchopt_optimizers.AdaHessian,
        dict(learning_rate=0.15),
        "official code's default",
        needs_hessian=True,
        seeded=True,
    ),
    "adam": OptimizerSpec(
        keras.optimizers.Adam, dict(learning_rate=1e-3), "Keras default"
    ),
    "adamw": OptimizerSpec(
        keras.optimizers.AdamW,
        dict(learning_rate=1e-3, weight_decay=0.05),
        "Keras default rate",
    ),
    "sgd": OptimizerSpec(
        keras.optimizers.SGD,
        dict(learning_rate=0.05, momentum=0.9),
        "a common rate for momentum SGD on small models",
    ),
    "lion": OptimizerSpec(
        keras.optimizers.Lion,
        dict(learning_rate=2e-4, weight_decay=0.5),
        "AdamW's rate / 5, decay x10 (Lion paper's advice)",
    ),
    "keras_lamb": OptimizerSpec(
        keras.optimizers.Lamb,
        dict(learning_rate=5e-3, weight_decay=0.01),
        "same as lamb; Keras applies the decay outside the trust ratio",
    ),
}
DEFAULT_OPTIMIZERS = ("adan", "adamw", "adam")


def check_names(names, table, kind):
    """Raises a `ValueError` listing the valid names if one is unknown."""
    unknown = [name for name in names if name not in table]
    if unknown:
        raise ValueError(
            f"Unknown {kind} {unknown[0]!r}. Expected one of: "
            f"{', '.join(table)}"
        )


def optimizer_settings(name, learning_rate=None):
    """Returns the constructor arguments of optimizer `name` in the job."""
    check_names([name], OPTIMIZERS, "optimizer")
    settings = dict(OPTIMIZERS[name].defaults)
    if learning_rate is not None:
        settings["learning_rate"] = learning_rate
    return settings


def make_optimizer(name, learning_rate=None, seed=None):
    """Returns a new optimizer `name` with the job's default arguments.

    Args:
        name: a key of `OPTIMIZERS`.
        learning_rate: `None` (the default for `name`) or a float.
        seed: passed to optimizers that draw random numbers (AdaHessian's
            probes); ignored by the others.
    """
    settings = optimizer_settings(name, learning_rate)
    spec = OPTIMIZERS[name]
    if spec.seeded and seed is not None:
        settings["seed"] = seed
    return spec.constructor(**settings)


class LayerContext:
    """What a normalization layer may depend on in one training run.

    Attributes:
        batch_size: the training batch size.
        total_steps: the optimizer updates of the run.
        axis: the channel axis of the layer's input.
    """

    def __init__(self, batch_size, total_steps, axis=-1):
        self.batch_size = batch_size
        self.total_steps = total_steps
        self.axis = axis


class LayerSpec:
    """One normalization setting of the layers mode.

    Attributes:
        make: `make(context)` returns a new normalization layer, or `None`
            for none.
        conv: the convolution class the CNN uses with it.
        models: the models (`"cnn"`, `"transformer"`) it can go into.
        description: how it is set up, for the table.
    """

    def __init__(self, make, description, conv="conv", models=("cnn",)):
        self.make = make
        self.description = description
        self.conv = conv
        self.models = models


def _data_format(context):
    return "channels_last" if context.axis == -1 else "channels_first"


def _quarter(context):
    return max(1, context.total_steps // 4)


BOTH = ("cnn", "transformer")
LAYERS = {
    "batch_norm": LayerSpec(
        lambda c: keras.layers.BatchNormalization(axis=c.axis),
        "keras BatchNormalization",
        models=BOTH,
    ),
    "layer_norm": LayerSpec(
        lambda c: keras.layers.LayerNormalization(axis=c.axis),
        "keras LayerNormalization",
        models=BOTH,
    ),
    "group_norm": LayerSpec(
        lambda c: keras.layers.GroupNormalization(8, axis=c.axis),
        "keras GroupNormalization, 8 groups",
    ),
    "none": LayerSpec(lambda c: None, "no normalization", models=BOTH),
    "ghost_bn": LayerSpec(
        lambda c: batchopt_layers.GhostBatchNormalization(
            virtual_batch_size=min(c.batch_size, 32), axis=c.axis
        ),
        "GhostBatchNormalization, ghost batches of min(batch, 32)",
        models=BOTH,
    ),
    "bcn_ws": LayerSpec(
        lambda c: batchopt_layers.BatchChannelNormalization(
            groups=8, axis=c.axis
        ),
        "WSConv2D + BatchChannelNormalization, 8 groups",
        conv="ws",
    ),
    "scaled_ws": LayerSpec(
        lambda c: None,
        "ScaledWSConv2D, no normalization layer (NF-Nets)",
        conv="scaled_ws",
    ),
    "ibn": LayerSpec(
        lambda c: batchopt_layers.InstanceBatchNormalization(
            ratio=0.5, axis=c.axis
        ),
        "InstanceBatchNormalization, half the channels instance-normalized",
    ),
    "region_norm": LayerSpec(
        lambda c: batchopt_layers.RegionNormalization(
            mode="learned", data_format=_data_format(c)
        ),
        "RegionNormalization, learned regions (RN-L)",
    ),
    "power_norm": LayerSpec(
        lambda c: batchopt_layers.PowerNormalization(
            warmup_steps=_quarter(c), axis=c.axis
        ),
        "PowerNormalization, warmup over the first quarter of the run",
        models=BOTH,
    ),
    "unified_norm": LayerSpec(
        lambda c: batchopt_layers.UnifiedNormalization(
            warmup_steps=_quarter(c), axis=c.axis
        ),
        "UnifiedNormalization, warmup over the first quarter of the run",
        models=BOTH,
    ),
    "rep_bn": LayerSpec(
        lambda c: batchopt_layers.RepBatchNormalization(axis=c.axis),
        "RepBatchNormalization (BN(x) + alpha x)",
        models=BOTH,
    ),
    "progressive_rep_bn": LayerSpec(
        lambda c: batchopt_layers.ProgressiveRepBN(
            total_steps=max(1, c.total_steps // 2), axis=c.axis
        ),
        "ProgressiveRepBN, LayerNorm to RepBN over the first half",
        models=BOTH,
    ),
}
DEFAULT_LAYERS = {
    "cnn": ("batch_norm", "none", "ghost_bn", "bcn_ws", "group_norm"),
    "transformer": ("layer_norm", "batch_norm", "power_norm", "rep_bn"),
}
BASELINE_LAYER = {"cnn": "batch_norm", "transformer": "layer_norm"}


def layers_for(model):
    """The names of `LAYERS` that can go into `model`."""
    return [name for name, spec in LAYERS.items() if model in spec.models]


def check_layer_names(names, model):
    """Raises a `ValueError` listing the valid names for `model`."""
    valid = layers_for(model)
    unknown = [name for name in names if name not in valid]
    if unknown:
        raise ValueError(
            f"Unknown layer {unknown[0]!r} for model {model!r}. Expected "
            f"one of: {', '.join(valid)}"
        )
