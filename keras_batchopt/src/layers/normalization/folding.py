"""Folding trained normalization layers into adjacent Dense layers."""

import keras
import numpy as np

from keras_batchopt.src.api_export import keras_batchopt_export
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
    gamma = (
        np.asarray(layer.gamma.numpy(), "float64")
        if layer.scale
        else np.ones(layer.moving_mean.shape)
    )
    beta = (
        np.asarray(layer.beta.numpy(), "float64")
        if layer.center
        else np.zeros(layer.moving_mean.shape)
    )
    variance = np.asarray(layer.moving_variance.numpy(), "float64")
    mean = np.asarray(layer.moving_mean.numpy(), "float64")
    scale = gamma / np.sqrt(variance + layer.epsilon)
    return scale, beta - mean * scale


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


def _channels_last(layer):
    axis = (
        layer.axis[0] if isinstance(layer.axis, (list, tuple)) else layer.axis
    )
    rank = len(layer.input.shape)
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


def _dense(layer):
    return (
        isinstance(layer, keras.layers.Dense)
        and not getattr(layer, "lora_enabled", False)
        and layer.dtype_policy.quantization_mode is None
    )


def _linear_dense(layer):
    return _dense(layer) and layer.activation is keras.activations.linear


def _plan(model, allow_unfinished):
    consumers, outputs = _graph(model)
    producers = {}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for parent in node.parent_nodes:
                producers.setdefault(id(layer), set()).add(id(parent.operation))
    by_id = {id(layer): layer for layer in model.layers}
    plan = {}
    weights = {}
    for layer in model.layers:
        affine = inference_affine(layer, allow_unfinished)
        if affine is None or len(layer._inbound_nodes) != 1:
            continue
        if not _channels_last(layer):
            plan[layer.name] = ("affine", affine)
            continue
        scale, shift = affine
        after = consumers.get(id(layer), [])
        before = [by_id.get(i) for i in producers.get(id(layer), ())]
        if (
            after
            and id(layer) not in outputs
            and all(_dense(c) for c in after)
            and all(len(c._inbound_nodes) == 1 for c in after)
            and all(c.name not in weights for c in after)
        ):
            plan[layer.name] = ("identity", None)
            for dense in after:
                kernel, bias = _dense_weights(dense, weights)
                weights[dense.name] = (
                    kernel * scale[:, None],
                    bias + shift @ kernel,
                )
            continue
        if (
            len(before) == 1
            and before[0] is not None
            and _linear_dense(before[0])
            and len(consumers.get(id(before[0]), [])) == 1
            and len(before[0]._inbound_nodes) == 1
            and id(before[0]) not in outputs
        ):
            dense = before[0]
            kernel, bias = _dense_weights(dense, weights)
            weights[dense.name] = (
                kernel * scale[None, :],
                bias * scale + shift,
            )
            plan[layer.name] = ("identity", None)
            continue
        plan[layer.name] = ("affine", affine)
    return plan, weights


def _dense_weights(dense, weights):
    if dense.name in weights:
        return weights[dense.name]
    kernel = np.asarray(dense.kernel.numpy(), "float64")
    bias = (
        np.asarray(dense.bias.numpy(), "float64")
        if dense.use_bias
        else np.zeros(kernel.shape[-1])
    )
    return kernel, bias


@keras_batchopt_export("keras_batchopt.layers.fold_normalization")
def fold_normalization(model, allow_unfinished=False):
    """A copy of a trained model for inference, with its normalization
    layers folded away.

    Every `RepBatchNormalization`, `ProgressiveRepBN` (once `lambda` is
    0), `UnifiedNormalization` and Keras `BatchNormalization` computes a
    per-channel affine `x * scale + shift` at inference. Each is merged
    into the `Dense` layers that consume its output (`W <- diag(scale) W`,
    `b <- b + shift W`), or else into the linear `Dense` that is its only
    input (`W <- W diag(scale)`, `b <- b scale + shift`), and replaced by
    an identity layer. Where neither applies (the input of
    `MultiHeadAttention`, a residual branch, channels_first), it becomes a
    `ChannelAffine` layer: no statistics, one multiply-add. Other layers
    keep their weights; the original model is unchanged.

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
                new.set_weights([a.astype("float32") for a in action[1]])
            continue
        if layer.name in weights:
            kernel, bias = weights[layer.name]
            values = [kernel.astype("float32")]
            if layer.use_bias:
                values.append(bias.astype("float32"))
            else:
                raise ValueError(
                    f"Cannot fold a shift into `{layer.name}`, a Dense "
                    "layer without bias."
                )
            new.set_weights(values)
        elif layer.weights:
            new.set_weights(layer.get_weights())
    return folded
