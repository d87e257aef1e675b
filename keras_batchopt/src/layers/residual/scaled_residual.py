"""A residual addition that scales the branch: `shortcut + a * branch`."""

import math

import keras
from keras import ops

from keras_batchopt.src.api_export import keras_batchopt_export

MODES = ("inverse_depth", "inverse_sqrt_depth", "skipinit")


def residual_scale(scale, depth):
    """The fixed factor of `scale` for a network of `depth` blocks (None
    for the learnable SkipInit mode)."""
    if scale == "inverse_depth":
        return 1.0 / depth
    if scale == "inverse_sqrt_depth":
        return 1.0 / math.sqrt(depth)
    if scale == "skipinit":
        return None
    return float(scale)


def _check(scale, depth, branch_index):
    if isinstance(scale, str):
        if scale not in MODES:
            raise ValueError(
                f"Argument `scale` must be one of {MODES} or a finite "
                f"float. Received: scale={scale!r}"
            )
    elif isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ValueError(
            f"Argument `scale` must be one of {MODES} or a finite float. "
            f"Received: scale={scale!r}"
        )
    elif not math.isfinite(scale):
        raise ValueError(
            f"Argument `scale` must be a finite float. Received: scale={scale}"
        )
    if scale in ("inverse_depth", "inverse_sqrt_depth") and (
        isinstance(depth, bool) or not isinstance(depth, int) or depth < 1
    ):
        raise ValueError(
            f"Argument `depth` must be an integer >= 1 with scale={scale!r}. "
            f"Received: depth={depth!r}"
        )
    if branch_index not in (0, 1):
        raise ValueError(
            "Argument `branch_index` must be 0 or 1. "
            f"Received: branch_index={branch_index!r}"
        )


@keras_batchopt_export("keras_batchopt.layers.ScaledResidual")
class ScaledResidual(keras.layers.Layer):
    """Adds a residual branch to its shortcut with the branch scaled:
    `shortcut + a * branch`.

    A drop-in replacement for the `keras.layers.Add()([shortcut, branch])`
    that closes a residual block, for training deep residual networks
    without normalization layers. With `n` residual blocks,

    * `scale="inverse_depth"`: `a = 1 / n` (Dherin & Munn 2025). Their
      Residual Expansion Theorem writes a tower of `n` blocks
      `x + a f_l(x)` as a sum over computation paths: `C(n, k)` paths go
      through `k` branches, each weighted `a**k`. With `a = 1` the number
      of paths, `2**n`, makes the output explode with depth (what
      normalization layers have been taming); `a = 1 / n` keeps
      `sum_k C(n, k) a**k = (1 + 1/n)**n` below `e` at any depth.
    * `scale="inverse_sqrt_depth"`: `a = 1 / sqrt(n)`, which bounds the
      variance `(1 + a**2)**n` instead, when the paths are uncorrelated
      (the other scaling the paper discusses).
    * `scale="skipinit"`: `a` is a trainable scalar initialised at 0, so
      every block starts as the identity (SkipInit, De & Smith 2020).
    * a float: a fixed `a`.

    The layer behaves the same in training and inference. The learnable
    scalar of the SkipInit mode is a float32 variable, cast to the compute
    dtype under mixed precision.

    Args:
        scale: "inverse_depth" (default), "inverse_sqrt_depth",
            "skipinit" or a float.
        depth: the number of residual blocks `n` of the network; needed by
            the two depth modes.
        branch_index: which of the two inputs is the residual branch (1,
            the default, for `[shortcut, branch]`; 0 for
            `[branch, shortcut]`).
        **kwargs: base `Layer` arguments.

    Example:

    >>> import numpy as np
    >>> import keras, keras_batchopt
    >>> add = keras_batchopt.layers.ScaledResidual(depth=4)
    >>> shortcut = np.ones((1, 2), "float32")
    >>> branch = np.full((1, 2), 2.0, "float32")
    >>> keras.ops.convert_to_numpy(add([shortcut, branch])).tolist()
    [[1.5, 1.5]]

    References:
        - Dherin & Munn. "On residual network depth." arXiv:2510.03470,
          2025 (scaling each residual module; `1/n`, `1/sqrt(n)`).
        - De & Smith. "Batch Normalization Biases Residual Blocks Towards
          the Identity Function in Deep Networks." NeurIPS 2020
          (SkipInit).
        - Zhang et al. "Fixup Initialization: Residual Learning Without
          Normalization." ICLR 2019 (baseline; not implemented here).

    Note:
        Fixup also rescales the branch weights at initialization and adds
        scalar biases; this layer only scales the branch output.
    """

    def __init__(
        self, scale="inverse_depth", depth=None, branch_index=1, **kwargs
    ):
        super().__init__(**kwargs)
        _check(scale, depth, branch_index)
        self.scale = scale
        self.depth = depth
        self.branch_index = branch_index
        self.factor = residual_scale(scale, depth)

    def build(self, input_shape):
        if (
            not isinstance(input_shape, (list, tuple))
            or len(input_shape) != 2
            or not all(isinstance(s, (list, tuple)) for s in input_shape)
        ):
            raise ValueError(
                "ScaledResidual must be called on a list of two tensors "
                f"[shortcut, branch]. Received: input_shape={input_shape}"
            )
        if self.factor is None:
            self.alpha = self.add_weight(
                shape=(),
                name="alpha",
                initializer="zeros",
                dtype="float32",
            )

    def call(self, inputs):
        branch = inputs[self.branch_index]
        shortcut = inputs[1 - self.branch_index]
        if self.factor is None:
            factor = ops.cast(self.alpha, branch.dtype)
        else:
            factor = ops.cast(self.factor, branch.dtype)
        return shortcut + factor * branch

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[1 - self.branch_index])

    def get_config(self):
        config = super().get_config()
        config.update(
            scale=self.scale, depth=self.depth, branch_index=self.branch_index
        )
        return config
