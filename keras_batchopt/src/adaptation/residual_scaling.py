"""Rebuild a residual network with scaled residual additions."""

import keras

from keras_batchopt.src.adaptation.surgery import _check_model
from keras_batchopt.src.adaptation.surgery import _layers
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.residual.scaled_residual import ScaledResidual
from keras_batchopt.src.layers.residual.scaled_residual import _check


def _ancestors(tensor):
    """The ids of every tensor that `tensor` was computed from."""
    seen, stack = set(), [tensor]
    while stack:
        history = getattr(stack.pop(), "_keras_history", None)
        if history is None:
            continue
        operation, node_index, _ = history
        for parent in operation._inbound_nodes[node_index].input_tensors:
            if id(parent) not in seen:
                seen.add(id(parent))
                stack.append(parent)
    return seen


def _branch_index(layer):
    """Which input of a two-input Add is the residual branch: the one that
    depends on the other (identity shortcut), else the one computed from
    more tensors (projection shortcut); None if the Add is used more than
    once."""
    if len(layer._inbound_nodes) != 1:
        return None
    inputs = layer._inbound_nodes[0].input_tensors
    if len(inputs) != 2:
        return None
    first, second = (_ancestors(t) for t in inputs)
    if id(inputs[0]) in second:
        return 1
    if id(inputs[1]) in first:
        return 0
    return 1 if len(second) >= len(first) else 0


@keras_batchopt_export("keras_batchopt.adaptation.scale_residuals")
def scale_residuals(model, scale="inverse_depth"):
    """Returns a copy of a residual model whose two-input `Add` layers are
    `ScaledResidual` layers: `shortcut + a * branch`.

    Every `keras.layers.Add` with two inputs, in the model and in the
    Functional or Sequential models nested in it, counts as one residual
    block; `n` is their number, so that `scale="inverse_depth"` uses
    `a = 1 / n` (see `keras_batchopt.layers.ScaledResidual`). In each
    `Add`, the branch is the input computed from the other one (an
    identity shortcut); when neither is (a projection shortcut), the input
    computed from more tensors is taken as the branch. The other layers
    and their weights are copied. Use it on a normalization-free model
    before training; the copy behaves the same in training and inference.

    Args:
        model: a built Functional or Sequential `keras.Model`.
        scale: "inverse_depth" (default), "inverse_sqrt_depth", "skipinit"
            or a float, as for `ScaledResidual`.

    Returns:
        A new `keras.Model` (uncompiled).

    Example:

    >>> import keras, keras_batchopt
    >>> x = inputs = keras.Input((8,))
    >>> for _ in range(3):
    ...     x = keras.layers.Add()([x, keras.layers.Dense(8)(x)])
    >>> model = keras.Model(inputs, x)
    >>> scaled = keras_batchopt.adaptation.scale_residuals(model)
    >>> [layer.factor for layer in scaled.layers
    ...  if isinstance(layer, keras_batchopt.layers.ScaledResidual)]
    [0.333..., 0.333..., 0.333...]

    References:
        - Dherin & Munn. "On residual network depth." arXiv:2510.03470,
          2025.
        - De & Smith. "Batch Normalization Biases Residual Blocks Towards
          the Identity Function in Deep Networks." NeurIPS 2020.
    """
    _check_model(model)
    _check(scale, 1, 1)
    branches = {
        layer.name: _branch_index(layer)
        for layer in _layers(model)
        if type(layer) is keras.layers.Add
    }
    branches = {k: v for k, v in branches.items() if v is not None}
    if not branches:
        raise ValueError(
            "Argument `model` must hold keras.layers.Add layers with two "
            f"inputs (residual blocks). Received: model={model.name!r} "
            "with none."
        )
    pairs = []

    def clone(layer):
        if layer.name in branches:
            return ScaledResidual(
                scale=scale,
                depth=len(branches),
                branch_index=branches[layer.name],
                name=layer.name,
            )
        new = layer.__class__.from_config(layer.get_config())
        pairs.append((layer, new))
        return new

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new in pairs:
        new.set_weights(old.get_weights())
    return copy
