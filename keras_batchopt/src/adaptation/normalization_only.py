"""Training only the affine parameters of normalization layers."""

import keras

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.normalization.base import ChannelNormalization

NORMALIZATION_LAYERS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    ChannelNormalization,
)
AFFINE = ("gamma", "beta")


def _output_layers(model):
    """The layers whose outputs are the model's outputs."""
    if isinstance(model, keras.Sequential):
        return [model.layers[-1]]
    outputs = getattr(model, "outputs", None)
    if not outputs:
        raise ValueError(
            "Argument `output_layer=True` needs a built Functional or "
            "Sequential model, whose outputs are known. Received: "
            f"model={model!r}"
        )
    return [t._keras_history.operation for t in keras.tree.flatten(outputs)]


def _kept(model, output_layer):
    """The ids of the variables that stay trainable."""
    kept = set()
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, NORMALIZATION_LAYERS):
            kept.update(id(v) for v in layer.weights if v.name.endswith(AFFINE))
    if output_layer:
        for layer in _output_layers(model):
            kept.update(id(v) for v in layer.weights)
    return kept


@keras_batchopt_export("keras_batchopt.adaptation.train_only_normalization")
def train_only_normalization(model, output_layer=False):
    """Freezes every weight of `model` but the affine parameters of its
    normalization layers, and returns a function that undoes it.

    The `gamma` and `beta` of each normalization layer (Keras's
    BatchNormalization, LayerNormalization and GroupNormalization, and
    keras_batchopt's BN-family layers), in nested models and layers too,
    stay trainable; every other trainable weight is marked non-trainable
    (`variable.trainable = False`). Layers are not frozen: a
    BatchNormalization layer still uses batch statistics in training and
    updates its moving statistics, as in Frankle et al. The change shows
    in `model.trainable_weights` and in `model.summary()`'s trainable
    counts.

    Call it before `model.compile` (or compile again after it, and after
    `restore()`): a compiled model has fixed its trainable variables. The
    flags are not saved with the model.

    Args:
        model: a `keras.Model` (or layer), built.
        output_layer: also keep the weights of the layers that produce the
            model's outputs trainable (Frankle et al.'s variant with the
            output layer), for Functional and Sequential models.

    Returns:
        A function `restore()` that makes trainable again exactly the
        weights this call froze.

    Example:

    >>> import keras, keras_batchopt
    >>> model = keras.Sequential([
    ...     keras.Input((4,)), keras.layers.Dense(8),
    ...     keras.layers.BatchNormalization(), keras.layers.Dense(2)])
    >>> restore = keras_batchopt.adaptation.train_only_normalization(model)
    >>> [w.name for w in model.trainable_weights]
    ['gamma', 'beta']
    >>> restore()
    >>> len(model.trainable_weights)
    6

    References:
        - Frankle, Schwab and Morcos, 2021, [Training BatchNorm and Only
          BatchNorm: On the Expressive Power of Random Features in CNNs](
          https://arxiv.org/abs/2003.00152)
    """
    if not isinstance(model, keras.layers.Layer) or not model.built:
        raise ValueError(
            "Argument `model` must be a built keras.Model or layer. "
            f"Received: model={model!r}"
        )
    validation.check_bool("output_layer", output_layer)
    kept = _kept(model, output_layer)
    frozen = []
    seen = set()
    for variable in model.weights:
        if id(variable) in seen or id(variable) in kept:
            continue
        seen.add(id(variable))
        if variable.trainable:
            variable.trainable = False
            frozen.append(variable)

    def restore():
        """Makes trainable again the weights that were frozen."""
        for variable in frozen:
            variable.trainable = True

    return restore
