"""DUA's adaptation on a single test sample: augmented copies of it."""

import keras
import numpy as np

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.normalization.momentum_decay_batch_normalization import (  # noqa: E501
    MomentumDecayBatchNormalization,
)

DATA_FORMATS = ("channels_last", "channels_first")


def momentum_decay_layers(model):
    """The `MomentumDecayBatchNormalization` layers of `model`, nested
    ones included; a ValueError if there is none."""
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            f"Argument `model` must be a keras.Model. Received: model={model!r}"
        )
    found = [
        layer
        for layer in model._flatten_layers(include_self=True, recursive=True)
        if isinstance(layer, MomentumDecayBatchNormalization)
    ]
    if not found:
        raise ValueError(
            "Argument `model` must hold MomentumDecayBatchNormalization "
            "layers (see keras_batchopt.adaptation."
            "convert_batch_normalization). Received: a model without any."
        )
    return found


def augmented_copies(image, copies, padding, flip, rotate, fill_value, rng):
    """`copies` augmented copies of one channels_last image `(H, W, C)`:
    a random crop of the image padded by `padding` (filled with
    `fill_value`), a horizontal flip with probability 1/2, then a
    rotation by a random multiple of 90 degrees."""
    height, width = image.shape[:2]
    pad = ((padding, padding), (padding, padding), (0, 0))
    padded = np.pad(image, pad, constant_values=fill_value)
    out = np.empty((copies,) + image.shape, image.dtype)
    for i in range(copies):
        top, left = rng.integers(0, 2 * padding + 1, size=2)
        crop = padded[top : top + height, left : left + width]
        if flip and rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[i] = crop
    if rotate:
        turns = rng.integers(0, 4, size=copies)
        for i, k in enumerate(turns):
            out[i] = np.rot90(out[i], k, axes=(0, 1))
    return out


def _check_sample(x, data_format, rotate):
    x = np.asarray(keras.ops.convert_to_numpy(x))
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        raise ValueError(
            "Argument `x` must be one image, of shape (H, W, C) or "
            f"(1, H, W, C) ({data_format}). Received: x of shape {x.shape}"
        )
    if data_format == "channels_first":
        x = np.moveaxis(x, 0, -1)
    if rotate and x.shape[0] != x.shape[1]:
        raise ValueError(
            "Argument `rotate=True` needs a square image (rotations by 90 "
            f"degrees keep its shape). Received: x of spatial shape "
            f"{x.shape[:2]}. Pass rotate=False."
        )
    return x


@keras_batchopt_export("keras_batchopt.adaptation.adapt_on_sample")
def adapt_on_sample(
    model,
    x,
    copies=64,
    padding=4,
    flip=True,
    rotate=True,
    fill_value=0.0,
    data_format="channels_last",
    seed=None,
):
    """Adapts the `MomentumDecayBatchNormalization` layers of `model` on
    one test image, as DUA does, and returns the model's prediction for
    it with the adapted statistics.

    DUA adapts on a stream of single images. For each, it makes a batch
    of `copies` augmented copies (a random crop of the image padded by
    `padding` pixels, a random horizontal flip, then a rotation by a
    random multiple of 90 degrees), runs it through the model once with
    adaptation on (each layer updates its statistics with its decaying
    momentum: one step), and predicts the image with adaptation off (the
    moving statistics, no update). No gradient is computed. The
    `adapting` flag of each layer is restored afterwards.

    Args:
        model: a `keras.Model` with `MomentumDecayBatchNormalization`
            layers (`keras_batchopt.adaptation.convert_batch_normalization`
            makes one from a trained model).
        x: one image, `(H, W, C)` or `(1, H, W, C)` (channels_first:
            `(C, H, W)` or `(1, C, H, W)`), as the model takes it.
        copies: the number of augmented copies, an int >= 2. Defaults to
            `64`, as the official code.
        padding: the padding before the random crop, an int >= 0 (`0`: no
            crop). Defaults to `4`, the official CIFAR setting.
        flip: whether to flip copies horizontally with probability 1/2.
        rotate: whether to rotate each copy by a random multiple of 90
            degrees (square images only), as the official code.
        fill_value: the value of the padded pixels. The official code pads
            raw pixels with 0 before normalizing them: pass the normalized
            value of a black pixel to match it.
        data_format: `"channels_last"` (default) or `"channels_first"`.
        seed: an int seed of the augmentation's random draws, or None.

    Returns:
        The model's prediction for `x` (a batch of one), a NumPy array (a
        structure of them for a model with several outputs).

    Example:

    >>> import numpy as np
    >>> import keras, keras_batchopt
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
    ...     keras.layers.BatchNormalization(), keras.layers.Flatten(),
    ...     keras.layers.Dense(2)])
    >>> adapted = keras_batchopt.adaptation.convert_batch_normalization(
    ...     model, "MomentumDecayBatchNormalization")
    >>> image = np.random.default_rng(0).normal(size=(8, 8, 3))
    >>> y = keras_batchopt.adaptation.adapt_on_sample(
    ...     adapted, image, copies=16, seed=0)
    >>> y.shape, int(adapted.layers[1].adapted_batches)
    ((1, 2), 1)

    Note:
        The official code draws the crops and flips with torchvision and
        the rotations with `torch.randint`; here NumPy draws them (the
        same distributions, not the same numbers). The official code
        evaluates the whole test set after each sample; call
        `model.predict` with `layer.adapting = False` for that.

    References:
        - Mirza, Micorek, Possegger and Bischof, 2022, [The Norm Must Go
          On: Dynamic Unsupervised Domain Adaptation by Normalization](
          https://arxiv.org/abs/2112.00463) (CVPR 2022).
        - Official code: `dua` and `get_adaption_inputs_default` in
          `methods/dua.py`, and `utils/rotation.py`, of
          https://github.com/jmiemirza/DUA at commit
          5a2197154405ce947006558180f430d64b99c626.
    """
    found = momentum_decay_layers(model)
    copies = validation.check_positive_int("copies", copies)
    if copies < 2:
        validation.fail("copies", "an integer >= 2", copies)
    padding = validation.check_non_negative_int("padding", padding)
    validation.check_bool("flip", flip)
    validation.check_bool("rotate", rotate)
    fill_value = validation.check_in_interval(
        "fill_value", fill_value, -np.inf, np.inf, False, False
    )
    validation.check_one_of("data_format", data_format, DATA_FORMATS)
    image = _check_sample(x, data_format, rotate)
    rng = np.random.default_rng(seed)
    batch = augmented_copies(
        image, copies, padding, flip, rotate, fill_value, rng
    )
    sample = image[None]
    if data_format == "channels_first":
        batch = np.moveaxis(batch, -1, 1)
        sample = np.moveaxis(sample, -1, 1)
    flags = [layer.adapting for layer in found]
    try:
        for layer in found:
            layer.adapting = True
        model.predict(batch, batch_size=copies, verbose=0)
        for layer in found:
            layer.adapting = False
        return model.predict(sample, verbose=0)
    finally:
        for layer, flag in zip(found, flags):
            layer.adapting = flag
