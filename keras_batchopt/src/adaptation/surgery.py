"""Model surgery: Keras BatchNormalization to our BN-family layers and back."""

import warnings

import keras

from keras_batchopt.src.api_export import keras_batchopt_export

# The arguments of keras.layers.BatchNormalization that our BN-family
# layers share, and the base Layer's config. Renormalization and
# `synchronized` concern training only and are not carried over.
SHARED_CONFIG = (
    "name",
    "trainable",
    "dtype",
    "axis",
    "momentum",
    "epsilon",
    "center",
    "scale",
    "beta_initializer",
    "gamma_initializer",
    "moving_mean_initializer",
    "moving_variance_initializer",
    "beta_regularizer",
    "gamma_regularizer",
    "beta_constraint",
    "gamma_constraint",
)
STATE = ("gamma", "beta", "moving_mean", "moving_variance")


def _is_graph(model):
    """A Functional or Sequential model, which `clone_model` can rebuild."""
    return isinstance(model, keras.Sequential) or (
        isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth")
    )


def _check_model(model):
    if not _is_graph(model):
        raise ValueError(
            "Argument `model` must be a built Functional or Sequential "
            f"keras.Model. Received: model={model!r}"
        )


def _layers(model):
    """Every layer of `model` and of the Functional and Sequential models
    nested in it (the layers `keras.models.clone_model` can replace)."""
    for layer in model.layers:
        yield layer
        if _is_graph(layer):
            yield from _layers(layer)


def _selected(model, layer_names, convertible, what):
    """The names of the layers to convert; each named one must exist and be
    `convertible`, else a ValueError naming it."""
    layers = {layer.name: layer for layer in _layers(model)}
    if layer_names is None:
        return {n for n, layer in layers.items() if convertible(layer)}
    if isinstance(layer_names, str):
        layer_names = [layer_names]
    for name in layer_names:
        if name not in layers:
            raise ValueError(
                f"Argument `layer_names` must name layers of the model. "
                f"Received: layer_names containing {name!r}, which is not "
                "a layer of the model (nor of a Functional or Sequential "
                "model nested in it)."
            )
        if not convertible(layers[name]):
            raise ValueError(
                f"Argument `layer_names` must name {what} layers. "
                f"Received: layer_names containing {name!r}, a "
                f"{type(layers[name]).__name__}."
            )
    return set(layer_names)


def _clone(model, selected, make):
    """`keras.models.clone_model` with the selected layers made by
    `make(layer)` and every other layer copied; weights carried over (by
    name for the replaced layers)."""
    pairs = []

    def clone(layer):
        if layer.name in selected:
            new = make(layer)
        else:
            new = layer.__class__.from_config(layer.get_config())
        pairs.append((layer, new, layer.name in selected))
        return new

    def call(layer, *args, **kwargs):
        # Keras's BatchNormalization was called with `mask=`; a replacement
        # without a `mask` argument is called without it.
        if "mask" in kwargs and not layer._call_has_mask_arg:
            kwargs.pop("mask")
        return layer(*args, **kwargs)

    copy = keras.models.clone_model(
        model,
        clone_function=clone,
        call_function=None if isinstance(model, keras.Sequential) else call,
        recursive=True,
    )
    for old, new, replaced in pairs:
        if not replaced:
            new.set_weights(old.get_weights())
            continue
        values = {v.name: v for v in old.weights}
        # A test-time adaptation layer's own state (UnMix-TNS's components,
        # the source snapshot and decaying momentum of momentum-decay BN)
        # is not in the old layer: it starts at its initial values.
        own = getattr(new, "adaptation_state", ())
        for variable in new.weights:
            if variable.name in own and variable.name not in values:
                continue
            variable.assign(keras.ops.convert_to_numpy(values[variable.name]))
    return copy


def _warn_unreached(copy, cls):
    """Warns about layers of class `cls` left inside custom layers."""
    left = [
        layer.name
        for layer in copy._flatten_layers(include_self=False, recursive=True)
        if type(layer) is cls
    ]
    if left:
        warnings.warn(
            f"{len(left)} {cls.__name__} layer(s) inside custom layers "
            f"were left unchanged: {left}. Only layers of Functional and "
            "Sequential models (nested ones included) can be replaced.",
            stacklevel=3,
        )


def _from_config(cls, config):
    """`cls(**config)`, with a serialized dtype policy deserialized (the
    checks' ValueErrors pass unchanged, unlike with `from_config`)."""
    if isinstance(config.get("dtype"), dict):
        config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
    return cls(**config)


def _target_class(layer_class):
    from keras_batchopt import layers

    cls = layer_class
    if isinstance(layer_class, str):
        cls = getattr(layers, layer_class, None)
    if not (
        isinstance(cls, type)
        and getattr(cls, "batch_normalization_state", False)
    ):
        names = sorted(
            name
            for name in dir(layers)
            if getattr(getattr(layers, name), "batch_normalization_state", 0)
        )
        raise ValueError(
            "Argument `layer_class` must be a keras_batchopt layer (or its "
            "name) that holds the state of a Keras BatchNormalization: one "
            f"of {', '.join(names)}. Received: layer_class={layer_class!r}"
        )
    return cls


@keras_batchopt_export("keras_batchopt.adaptation.convert_batch_normalization")
def convert_batch_normalization(
    model, layer_class, layer_names=None, **layer_kwargs
):
    """A copy of a trained model with its BatchNormalization layers replaced
    by one of keras_batchopt's BN-family layers.

    Every `keras.layers.BatchNormalization` of `model` (or those named in
    `layer_names`), in Functional and Sequential models nested in it too,
    becomes a `layer_class` layer with the same name, axis, epsilon,
    momentum, center, scale, initializers, regularizers, constraints and
    dtype policy, and with the same `gamma`, `beta`, `moving_mean` and
    `moving_variance`. Every other layer is copied with its weights. The
    original model is unchanged, and the copy is not compiled.

    For test-time adaptation (`AlphaBatchNormalization`,
    `UnMixTestTimeNormalization`, `MomentumDecayBatchNormalization`), the
    copy then adapts in inference: `model.predict(x)`, `model(x)`. With
    `AlphaBatchNormalization(alpha=0)` (or momentum-decay adaptation
    switched off, `layer.adapting = False`) its outputs in inference equal
    the original's; UnMix-TNS starts its components from the moving
    statistics at its first inference call.

    Args:
        model: a built Functional or Sequential `keras.Model`.
        layer_class: the class, or its name in `keras_batchopt.layers`, of
            a layer that holds the state of a Keras BatchNormalization:
            `"AlphaBatchNormalization"`, `"GhostBatchNormalization"` or
            `"UnMixTestTimeNormalization"` or
            `"MomentumDecayBatchNormalization"`.
        layer_names: None (default) for every BatchNormalization layer, or
            the names of those to replace; a name that is not a
            BatchNormalization layer of the model raises a ValueError.
        **layer_kwargs: arguments of `layer_class` (for example `alpha` or
            `virtual_batch_size`); they override those taken from the
            BatchNormalization layers.

    Returns:
        The converted `keras.Model` (Sequential stays Sequential).

    Example:

    >>> import numpy as np
    >>> import keras, keras_batchopt
    >>> model = keras.Sequential([
    ...     keras.Input((4, 4, 3)), keras.layers.Conv2D(8, 3),
    ...     keras.layers.BatchNormalization(), keras.layers.Flatten(),
    ...     keras.layers.Dense(2)])
    >>> adapted = keras_batchopt.adaptation.convert_batch_normalization(
    ...     model, "AlphaBatchNormalization", alpha=0.0)
    >>> type(adapted.layers[1]).__name__
    'AlphaBatchNormalization'
    >>> x = np.random.default_rng(0).normal(size=(2, 4, 4, 3))
    >>> bool(np.allclose(model.predict(x, verbose=0),
    ...                  adapted.predict(x, verbose=0)))
    True

    Note:
        BatchNormalization layers inside custom (subclassed) layers are not
        reached (a warning names them); renormalization (`renorm=True`)
        and `synchronized` concern training only and are not carried over.

    References:
        - You, Li and Zhao, 2021, [Test-time Batch Statistics Calibration
          for Covariate Shift](https://arxiv.org/abs/2110.04065) (the
          `AlphaBatchNorm.adapt_model` of the UnMix-TNS code,
          https://github.com/devavratTomar/unmixtns, replaces each
          BatchNorm2d in place).
    """
    _check_model(model)
    cls = _target_class(layer_class)
    selected = _selected(
        model,
        layer_names,
        lambda layer: type(layer) is keras.layers.BatchNormalization,
        "keras.layers.BatchNormalization",
    )

    def make(layer):
        config = layer.get_config()
        config = {k: config[k] for k in SHARED_CONFIG if k in config}
        config.update(layer_kwargs)
        return _from_config(cls, config)

    copy = _clone(model, selected, make)
    if layer_names is None:
        _warn_unreached(copy, keras.layers.BatchNormalization)
    return copy


@keras_batchopt_export("keras_batchopt.adaptation.to_batch_normalization")
def to_batch_normalization(model, layer_names=None):
    """A copy of a model with keras_batchopt's BN-family layers replaced by
    `keras.layers.BatchNormalization`, the reverse of
    `convert_batch_normalization`.

    Each `AlphaBatchNormalization`, `GhostBatchNormalization` or
    `UnMixTestTimeNormalization` or `MomentumDecayBatchNormalization` layer
    (or
    those named in `layer_names`) becomes a Keras BatchNormalization with
    the same name, arguments and weights (`gamma`, `beta`, `moving_mean`,
    `moving_variance`, the adapted statistics where a layer adapts
    them), so that the model can be shipped and loaded without this
    package. Every other layer is copied with its weights.

    In inference the copy uses the moving statistics alone: a
    `GhostBatchNormalization` (and an `AlphaBatchNormalization` with
    `alpha=0`) gives the same outputs; an `AlphaBatchNormalization` with
    `alpha > 0`, which mixes in each test batch's statistics, gives the
    source model's outputs; so does an `UnMixTestTimeNormalization`
    (its components are dropped: the moving statistics stay the source
    statistics).

    Args:
        model: a built Functional or Sequential `keras.Model`.
        layer_names: None (default) for every such layer, or the names of
            those to replace; a name that is not such a layer raises a
            ValueError.

    Returns:
        The converted `keras.Model` (Sequential stays Sequential).

    Example:

    >>> import keras, keras_batchopt
    >>> model = keras.Sequential([
    ...     keras.Input((3,)),
    ...     keras_batchopt.layers.AlphaBatchNormalization(alpha=0.2)])
    >>> plain = keras_batchopt.adaptation.to_batch_normalization(model)
    >>> type(plain.layers[0]).__name__
    'BatchNormalization'

    References:
        - You, Li and Zhao, 2021, [Test-time Batch Statistics Calibration
          for Covariate Shift](https://arxiv.org/abs/2110.04065)
    """
    _check_model(model)
    selected = _selected(
        model,
        layer_names,
        lambda layer: getattr(layer, "batch_normalization_state", False),
        "keras_batchopt BN-family (AlphaBatchNormalization, "
        "GhostBatchNormalization, UnMixTestTimeNormalization, "
        "MomentumDecayBatchNormalization)",
    )

    def make(layer):
        config = layer.get_config()
        config = {k: config[k] for k in SHARED_CONFIG if k in config}
        return _from_config(keras.layers.BatchNormalization, config)

    return _clone(model, selected, make)
