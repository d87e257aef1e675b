"""Folding trained normalization layers into adjacent Dense layers."""

import keras
import numpy as np
from keras import ops

from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.normalization import statistics
from keras_batchopt.src.layers.normalization.channel_affine import ChannelAffine
from keras_batchopt.src.layers.normalization.progressive_rep_bn import (
    ProgressiveRepBN,
)
from keras_batchopt.src.layers.normalization.rep_batch_normalization import (
    RepBatchNormalizationBase,
)
from keras_batchopt.src.layers.normalization.unified_normalization import (
    UnifiedNormalization,
)


@keras.saving.register_keras_serializable(package="keras_batchopt")
class FoldedIdentity(keras.layers.Layer):
    """Where a folded normalization layer stood: its input, unchanged (and
    its mask passed through)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


def _keras_bn_affine(layer):
    scale, shift = statistics.scale_and_offset(
        layer.moving_mean,
        layer.moving_variance,
        layer.gamma,
        layer.beta,
        layer.epsilon,
    )
    return (
        ops.convert_to_numpy(scale).astype("float64"),
        ops.convert_to_numpy(shift).astype("float64"),
    )


def inference_affine(layer, allow_unfinished=False):
    """`(scale, shift)` with `layer`'s inference output `x * scale +
    shift` per channel (float64 NumPy), or None when `layer` has no such
    form. Raises for a `ProgressiveRepBN` whose `lambda` is above 0 unless
    `allow_unfinished`."""
    if isinstance(layer, ProgressiveRepBN):
        if layer.inference_mode != "rep_bn":
            return None if layer.unfinished() else _float64(layer)
        if layer.unfinished() and not allow_unfinished:
            raise ValueError(
                f"{layer.name} has lambda={layer.lambda_value():.4g} > 0: "
                "training stopped before LayerNorm was annealed out, so "
                "the folded RepBN differs from the trained blend. Train "
                f"for {layer.warmup_steps + layer.total_steps} updates in "
                "all, or pass `allow_unfinished=True`."
            )
        return _float64(layer)
    if isinstance(layer, (RepBatchNormalizationBase, UnifiedNormalization)):
        return _float64(layer)
    if isinstance(layer, keras.layers.BatchNormalization):
        return _keras_bn_affine(layer)
    return None


def _float64(layer):
    scale, shift = layer.inference_affine()
    return np.asarray(scale, "float64"), np.asarray(shift, "float64")


def _input(layer):
    """The tensor a single-call layer normalizes (not its mask)."""
    return layer._inbound_nodes[0].input_tensors[0]


def _channels_last(layer):
    axis = (
        layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
    )
    rank = len(_input(layer).shape)
    return axis % rank == rank - 1


def _graph(model):
    """Each layer's consumers in `model`, and the layers whose output is a
    model output."""
    consumers = {}
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            for parent in node.parent_nodes:
                consumers.setdefault(id(parent.operation), []).append(
                    node.operation
                )
    outputs = {id(t._keras_history.operation) for t in model.outputs}
    return consumers, outputs


def _plain(layer):
    """Not LoRA-adapted, not quantized: its kernel is its weight."""
    return (
        not getattr(layer, "lora_enabled", False)
        and layer.dtype_policy.quantization_mode is None
    )


def _weights(layer, weights):
    """`layer.get_weights()` in float64, or the values already planned."""
    if layer.name not in weights:
        weights[layer.name] = [
            np.asarray(w, "float64") for w in layer.get_weights()
        ]
    return weights[layer.name]


def _index(layer, variable):
    return next(i for i, w in enumerate(layer.weights) if w is variable)


def _fed_projections(attention, node, source):
    """The projections (`EinsumDense` sublayers) of a MultiHeadAttention
    call whose input is `source`'s output, or None if another argument
    (a mask) is."""
    args, kwargs = node.arguments.args, node.arguments.kwargs
    named = dict(kwargs)
    for name, arg in zip(("query", "value", "key"), args):
        named[name] = arg
    if named.get("key") is None:
        named["key"] = named.get("value")
    fed = []
    for name, tensor in named.items():
        if getattr(tensor, "_keras_history", None) is None:
            continue
        if tensor._keras_history.operation is not source:
            continue
        if name not in ("query", "key", "value"):
            return None
        fed.append(getattr(attention, f"_{name}_dense"))
    return fed


def _into_consumer(layer, consumer, scale, shift, weights):
    """Folds `x * scale + shift` into the input side of `consumer`, or
    returns False (and changes nothing) where it cannot."""
    if len(consumer._inbound_nodes) != 1 or not _plain(consumer):
        return False
    if isinstance(consumer, keras.layers.Dense):
        targets = [
            (consumer.kernel, consumer.bias if consumer.use_bias else None)
        ]
    elif isinstance(consumer, keras.layers.MultiHeadAttention):
        if getattr(consumer, "_use_gate", False) or not consumer._use_bias:
            return False
        fed = _fed_projections(consumer, consumer._inbound_nodes[0], layer)
        if not fed:
            return False
        targets = [(dense.kernel, dense.bias) for dense in fed]
    else:
        return False
    if any(bias is None for _, bias in targets) and np.any(shift):
        return False
    values = _weights(consumer, weights)
    for kernel, bias in targets:
        k = _index(consumer, kernel)
        w = values[k]
        if bias is not None:
            b = _index(consumer, bias)
            values[b] = values[b] + np.tensordot(shift, w, axes=(0, 0))
        values[k] = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    return True


def _into_producer(producer, scale, shift, weights):
    """Folds `x * scale + shift` into the output side of a linear Dense."""
    if not (
        isinstance(producer, keras.layers.Dense)
        and producer.activation is keras.activations.linear
        and producer.use_bias
        and _plain(producer)
        and len(producer._inbound_nodes) == 1
    ):
        return False
    values = _weights(producer, weights)
    values[0] = values[0] * scale
    values[1] = values[1] * scale + shift
    return True


def _plan(model, allow_unfinished):
    """Per normalization layer: "identity" (merged) or ("affine", a, b);
    and the new weights of the layers merged into."""
    consumers, outputs = _graph(model)
    plan, weights = {}, {}
    for layer in model.layers:
        affine = inference_affine(layer, allow_unfinished)
        if affine is None or len(layer._inbound_nodes) != 1:
            continue
        scale, shift = affine
        if _channels_last(layer):
            after = consumers.get(id(layer), [])
            unique = list({id(c): c for c in after}.values())
            trial = {k: [v.copy() for v in vs] for k, vs in weights.items()}
            if (
                unique
                and id(layer) not in outputs
                and all(
                    _into_consumer(layer, c, scale, shift, trial)
                    for c in unique
                )
            ):
                weights = trial
                plan[layer.name] = ("identity",)
                continue
            producer = _input(layer)._keras_history.operation
            if (
                len(consumers.get(id(producer), [])) == 1
                and id(producer) not in outputs
                and _into_producer(producer, scale, shift, weights)
            ):
                plan[layer.name] = ("identity",)
                continue
        plan[layer.name] = ("affine", scale, shift)
    return plan, weights


@keras_batchopt_export("keras_batchopt.layers.fold_normalization")
def fold_normalization(model, allow_unfinished=False):
    """A copy of a trained model for inference, with its normalization
    layers folded away.

    Every `RepBatchNormalization`, `ProgressiveRepBN` (once `lambda` is
    0), `UnifiedNormalization` and Keras `BatchNormalization` computes a
    per-channel affine `x * scale + shift` at inference. Each is merged
    into the layers that consume its output, `Dense` layers and the
    query, key and value projections of `MultiHeadAttention`
    (`W <- diag(scale) W`, `b <- b + shift W`), or else into the linear
    `Dense` that is its only input (`W <- W diag(scale)`,
    `b <- b scale + shift`), and replaced by an identity layer. Where
    neither applies (a residual branch, a model output, channels_first),
    it becomes a `ChannelAffine` layer: no statistics, one multiply-add.
    Other layers keep their weights; the original model is unchanged.

    The folded model's outputs in inference mode equal the original's up
    to float rounding; it is meant for inference (the merged `Dense`
    layers no longer hold the original weights).

    Args:
        model: a built Functional or Sequential Keras model.
        allow_unfinished: fold a `ProgressiveRepBN` whose `lambda` is still
            above 0 (its inference is RepBN alone, which then differs from
            training) instead of raising.

    Returns:
        The folded `keras.Model`.

    Example:

    >>> import numpy as np
    >>> import keras, keras_batchopt
    >>> inputs = keras.Input((5, 8))
    >>> h = keras_batchopt.layers.RepBatchNormalization()(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(4)(h))
    >>> folded = keras_batchopt.layers.fold_normalization(model)
    >>> x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    >>> y, y_folded = model.predict(x, verbose=0), folded.predict(x, verbose=0)
    >>> bool(np.allclose(y, y_folded, atol=1e-5))
    True

    References:
        - Guo et al. "SLAB." ICML 2024 (RepBN re-parameterization).
        - Yang et al. "Unified Normalization." ACM MM 2022.
    """
    if not isinstance(model, keras.Model) or not hasattr(
        model, "_nodes_by_depth"
    ):
        raise ValueError(
            "Argument `model` must be a built Functional or Sequential "
            "keras.Model (for a subclassed model, fold by hand with each "
            f"layer's `inference_affine()`). Received: model={model!r}"
        )
    if isinstance(model, keras.Sequential):
        model = model._functional
    plan, weights = _plan(model, allow_unfinished)

    def clone(layer):
        action = plan.get(layer.name)
        if action is None:
            return layer.__class__.from_config(layer.get_config())
        if action[0] == "identity":
            return FoldedIdentity(name=layer.name)
        return ChannelAffine(axis=layer.axis, name=layer.name)

    folded = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        new = folded.get_layer(layer.name)
        action = plan.get(layer.name)
        if action is not None:
            if action[0] == "affine":
                new.set_weights([a.astype("float32") for a in action[1:]])
        elif layer.name in weights:
            new.set_weights([w.astype("float32") for w in weights[layer.name]])
        elif layer.weights:
            new.set_weights(layer.get_weights())
    return folded
