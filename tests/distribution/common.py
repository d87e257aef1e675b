"""What the distribution workers share: a tiny model whose kernels a 2x4
mesh can shard (a convolution for AdaHessian's spatial averaging, two
Dense kernels for the layer-wise trust ratios and SinkGD's row and column
normalisation), its data, and the comparison of weights.

The workers run in their own interpreter (the device count is fixed when
the framework starts), print one JSON line, and the tests read it.
"""

import numpy as np

STEPS = 20
BATCH = 16

# One case per optimizer of the package (tests/optimizers/contract_cases.py),
# with the options that reduce over a whole variable: AdaHessian's spatial
# averaging of the convolution kernel, LARS's LARC with the sum of norms,
# AdaGradNorm's one global accumulator, SinkGD's Sinkhorn iterations.
OPTIMIZER_CASES = (
    "ada_hessian_power_interval",
    "adan",
    "lamb",
    "lars_nesterov_larc_sum_of_norms",
    "sgd_sai",
    "adagrad_norm",
    "sink_gd",
    "adan_clipped",
)


def extra_cases():
    """Cases beyond the contract's: Adan with a global-norm clip that
    acts on these gradients (the contract's `max_grad_norm=5` does not)."""
    from keras_batchopt.optimizers import Adan
    from tests.optimizers.contract_cases import OptimizerCase

    return [
        OptimizerCase(
            "adan_clipped",
            Adan,
            dict(learning_rate=0.01, weight_decay=0.05, max_grad_norm=0.1),
        )
    ]


def data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(STEPS * BATCH, 4, 4, 2)).astype("float32")
    y = rng.normal(size=(STEPS * BATCH, 4)).astype("float32")
    return x, y


def build_model():
    import keras

    inputs = keras.Input((4, 4, 2))
    h = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(16, activation="tanh", name="dense_1")(h)
    outputs = keras.layers.Dense(4, name="dense_2")(h)
    return keras.Model(inputs, outputs)


def initial_weights():
    import keras

    keras.utils.set_random_seed(0)
    return [np.asarray(w) for w in build_model().get_weights()]


def relative_error(weights, reference):
    """The largest `max|a - b| / max(max|b|, 0.01)` over the arrays: the
    difference relative to each array's scale, floored at 0.01 so that
    an array that stays near zero (the bias of a convolution followed by
    a normalization, ~1e-8) is held to an absolute 1e-7 at rtol 1e-5
    instead of a relative error of rounding noise."""
    worst = 0.0
    for a, b in zip(weights, reference):
        scale = max(float(np.max(np.abs(b))), 0.01)
        worst = max(worst, float(np.max(np.abs(a - b))) / scale)
    return worst


def layer_factories(synchronized):
    """Every batch-statistics layer of the package that implements
    `synchronized`, built with it, for inputs of shape (batch, 4, 4, 4)."""
    from keras_batchopt import layers

    kwargs = dict(synchronized=synchronized)
    return {
        "ghost_batch_normalization": lambda: layers.GhostBatchNormalization(
            4, momentum=0.5, **kwargs
        ),
        "batch_channel_normalization": lambda: layers.BatchChannelNormalization(
            groups=2, batch_statistics="batch", momentum=0.5, **kwargs
        ),
        "instance_batch_normalization": lambda: (
            layers.InstanceBatchNormalization(momentum=0.5, **kwargs)
        ),
        "rep_batch_normalization": lambda: layers.RepBatchNormalization(
            momentum=0.5, **kwargs
        ),
        "progressive_rep_bn": lambda: layers.ProgressiveRepBN(
            total_steps=4, momentum=0.5, **kwargs
        ),
        "alpha_batch_normalization": lambda: layers.AlphaBatchNormalization(
            momentum=0.5, **kwargs
        ),
        "region_normalization": lambda: layers.RegionNormalization(
            mode="learned", kernel_size=3, **kwargs
        ),
        # Custom backward passes that reduce over the batch. PowerNorm:
        # batch statistics at step 1, the running one after; its gradient
        # statistic (weighted 1 - alpha_backward in dx) from step 2 on.
        # UnifiedNorm: dx takes the gradient statistic at every step, its
        # window mean from step 3 on.
        "power_normalization": lambda: layers.PowerNormalization(
            alpha_forward=0.5, alpha_backward=0.5, warmup_steps=1, **kwargs
        ),
        "unified_normalization": lambda: layers.UnifiedNormalization(
            window_size=2, warmup_steps=0, momentum=0.5, **kwargs
        ),
    }


# Layers also run on padded token sequences, with a Keras mask (see
# `build_layer_model`): their statistics skip the padding.
MASKED_LAYERS = ("power_normalization", "unified_normalization")


def layer_cases():
    """The names of the layer cases: each layer of `layer_factories`, and
    `<name>_masked` for those of `MASKED_LAYERS`."""
    names = list(layer_factories(True))
    return names + [name + "_masked" for name in MASKED_LAYERS]


LAYER_STEPS = 3


def layer_data(seed=1):
    rng = np.random.default_rng(seed)
    # Channels of different scales and offsets: batch statistics matter.
    scale = np.array([0.5, 1.0, 2.0, 4.0], "float32")
    x = rng.normal(size=(LAYER_STEPS * BATCH, 4, 4, 4)) * scale + scale
    y = rng.normal(size=(LAYER_STEPS * BATCH, 1))
    return x.astype("float32"), y.astype("float32")


def masked_layer_data(seed=1):
    """`layer_data` with the last tokens (pixels, in raster order) of each
    sample zeroed: 0 to 11 of the 16, so that the two replicas' halves of
    a batch hold different numbers of real tokens."""
    x, y = layer_data(seed)
    tokens = x.reshape(len(x), 16, 4)
    padding = np.random.default_rng(seed + 1).integers(0, 12, len(x))
    for sample, count in zip(tokens, padding):
        sample[16 - count :] = 0.0
    return tokens.reshape(x.shape), y


def build_layer_model(name, synchronized):
    """Input -> Conv2D -> the layer -> Dense: gradients reach the layer's
    input, so the synchronized moments' gradient is exercised too. A
    `<name>_masked` case takes the 16 pixels as tokens, masks the zero
    ones (Masking) and maps each token by a Dense layer (which passes the
    mask on) before the layer."""
    import keras

    inputs = keras.Input((4, 4, 4))
    if name.endswith("_masked"):
        name = name[: -len("_masked")]
        h = keras.layers.Reshape((16, 4))(inputs)
        h = keras.layers.Masking(0.0)(h)
        h = keras.layers.Dense(4, use_bias=False, name="conv")(h)
    else:
        h = keras.layers.Conv2D(4, 1, use_bias=False, name="conv")(inputs)
    h = layer_factories(synchronized)[name]()(h)
    outputs = keras.layers.Dense(1, name="head")(keras.layers.Flatten()(h))
    return keras.Model(inputs, outputs)


def train_layer_model(name, synchronized, weights, x, y):
    import keras

    model = build_layer_model(name, synchronized)
    model.set_weights(weights)
    model.compile(keras.optimizers.SGD(0.01), "mse")
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    return model


def replica_spread(model):
    """The largest relative difference between the replicas' copies of a
    weight (a `tf.distribute` mirrored variable's per-device values): a
    replica that computed other statistics or another backward state
    than the first keeps its own copy. 0 where a weight has one copy."""
    worst = 0.0
    for variable in model.weights:
        copies = getattr(variable.value, "values", None) or ()
        copies = [np.asarray(c) for c in copies]
        for copy in copies[1:]:
            worst = max(worst, relative_error([copy], copies[:1]))
    return worst


def initial_layer_weights(name):
    import keras

    keras.utils.set_random_seed(0)
    return [np.asarray(w) for w in build_layer_model(name, False).get_weights()]


def layer_errors(distribution, names):
    """Per layer case of `layer_cases` (those in `names`, or all): the
    error relative to one device after `LAYER_STEPS` steps of `fit`
    (weights and moving statistics, the backward state included),
    synchronized and not, inside `distribution.scope()` (a Keras
    distribution or a `tf.distribute` strategy), and the synchronized
    model's `replica_spread`."""
    out = {}
    for name in layer_cases():
        if names and name not in names:
            continue
        masked = name.endswith("_masked")
        x, y = masked_layer_data() if masked else layer_data()
        weights = initial_layer_weights(name)
        reference = train_layer_model(name, True, weights, x, y)
        reference = reference.get_weights()
        entry = {}
        for synchronized in (True, False):
            with distribution.scope():
                model = train_layer_model(name, synchronized, weights, x, y)
            key = "synchronized" if synchronized else "local"
            entry[key] = relative_error(model.get_weights(), reference)
            if synchronized:
                entry["replica_spread"] = replica_spread(model)
        out[name] = entry
    return out
