"""Weight standardization of a kernel, shared by the WS layers.

A Keras kernel keeps its output channels on the last axis (HWIO for a 2-D
convolution, IO for a dense layer), so each output channel is standardized
over all the other axes, its fan-in.
"""

import math

from keras import initializers
from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.normalization import statistics

PLACEMENTS = ("outside", "inside", "floor")

# NF-Nets' gains gamma: the activation's output of a unit Gaussian input
# has variance 1 / gamma^2 (Brock et al. 2021, their `nonlinearities`).
NONLINEARITY_GAINS = {
    "linear": 1.0,
    "identity": 1.0,
    "relu": 1.7139588594436646,
    "gelu": 1.7015043497085571,
    "silu": 1.7881293296813965,
    "swish": 1.7881293296813965,
    "tanh": 1.5939117670059204,
    "leaky_relu": 1.70590341091156,
    "relu6": 1.7131484746932983,
    "sigmoid": 4.803835391998291,
    "selu": 1.0008515119552612,
    "softplus": 1.9203323125839233,
}


@keras_batchopt_export("keras_batchopt.layers.nonlinearity_gain")
def nonlinearity_gain(activation):
    """NF-Nets' gain `gamma` of an activation, to pass to a scaled WS layer.

    `gamma` makes the activation's output have unit variance for a unit
    Gaussian input, so that the layers of a network without normalization
    keep their signal's variance.

    Args:
        activation: the activation's name, one of `"linear"`, `"relu"`,
            `"gelu"`, `"silu"` (`"swish"`), `"tanh"`, `"leaky_relu"`
            (slope 0.01), `"relu6"`, `"sigmoid"`, `"selu"`, `"softplus"`.

    Returns:
        The gain, a float.

    Example:

    >>> import keras, keras_batchopt
    >>> round(keras_batchopt.layers.nonlinearity_gain("relu"), 4)
    1.714

    References:
        - Brock, De and Smith, 2021, [Characterizing signal propagation to
          close the performance gap in unnormalized
          ResNets](https://arxiv.org/abs/2101.08692)
    """
    if activation not in NONLINEARITY_GAINS:
        validation.fail(
            "activation",
            "one of " + ", ".join(repr(k) for k in NONLINEARITY_GAINS),
            activation,
        )
    return NONLINEARITY_GAINS[activation]


def check_gamma(gamma):
    """A float > 0, or the name of an activation in the gains table."""
    if isinstance(gamma, str):
        nonlinearity_gain(gamma)
        return gamma
    return validation.check_positive("gamma", gamma)


def gamma_value(gamma):
    return nonlinearity_gain(gamma) if isinstance(gamma, str) else gamma


def standardize(kernel, epsilon, unbiased, placement, scaled, gain=None):
    """The standardized kernel, computed in float32 and cast back.

    ``W_hat = (W - mean) * s`` per output channel, with the variance over
    the fan-in ``N`` (times ``N / (N - 1)`` when `unbiased`) and

    - `"outside"`: ``s = 1 / (std + eps)`` (official WS code),
    - `"inside"`: ``s = 1 / sqrt(var + eps)`` (timm `StdConv2d`),
    - `"floor"`: ``s = 1 / sqrt(max(var, eps))``;

    `scaled` uses ``N * var`` in place of ``var`` (NF-Nets), so that the
    fan-in's sum of squares is 1; `"inside"` then scales
    ``1 / sqrt(var + eps)`` by ``1 / sqrt(N)``, as timm's
    `ScaledStdConv2d` does. `gain` (per output channel) multiplies `s`.
    """
    dtype = kernel.dtype
    w = statistics.upcast(kernel)
    axes = list(range(len(w.shape) - 1))
    fan_in = math.prod(w.shape[:-1])
    mean = statistics.mean(w, axes, keepdims=True)
    centered = w - mean
    variance = statistics.mean(ops.square(centered), axes, keepdims=True)
    if unbiased:
        variance = variance * (fan_in / max(fan_in - 1, 1))
    if placement == "outside":
        std = ops.sqrt(variance * fan_in) if scaled else ops.sqrt(variance)
        scale = 1.0 / (std + epsilon)
    elif placement == "inside":
        scale = ops.rsqrt(variance + epsilon)
        if scaled:
            scale = scale / math.sqrt(fan_in)
    else:
        spread = variance * fan_in if scaled else variance
        # max(spread, eps) as spread + relu(eps - spread): Keras's
        # `maximum` promotes float64 to float32.
        scale = ops.rsqrt(spread + ops.relu(epsilon - spread))
    if gain is not None:
        scale = scale * ops.cast(gain, scale.dtype)
    return ops.cast(centered * scale, dtype)


class WeightStandardization:
    """Mixin for a Keras conv or dense layer: standardizes its kernel.

    The kernel variable keeps the raw weights (saved and updated as
    usual); each call standardizes them before use, so gradients flow
    through the standardization.
    """

    scaled = False

    def __init__(
        self,
        *args,
        epsilon=1e-5,
        unbiased=True,
        epsilon_placement="outside",
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.epsilon = validation.check_positive("epsilon", epsilon)
        self.unbiased = validation.check_bool("unbiased", unbiased)
        self.epsilon_placement = validation.check_one_of(
            "epsilon_placement", epsilon_placement, PLACEMENTS
        )

    def standardized_kernel(self, kernel):
        gain = getattr(self, "gain", None)
        if self.scaled:
            factor = gamma_value(self.gamma)
            gain = factor if gain is None else gain * factor
        return standardize(
            kernel,
            self.epsilon,
            self.unbiased,
            self.epsilon_placement,
            self.scaled,
            gain,
        )

    def call(self, inputs):
        # Keras's `Conv1D.call` bypasses `convolution_op`, so the
        # convolution is spelled out here, once for every rank.
        padding = self.padding
        if padding == "causal":
            inputs = ops.pad(inputs, self._compute_causal_padding())
            padding = "valid"
        outputs = ops.conv(
            inputs,
            self.standardized_kernel(self.kernel),
            strides=list(self.strides),
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.use_bias:
            shape = [1] * len(outputs.shape)
            shape[-1 if self.data_format == "channels_last" else 1] = -1
            outputs = ops.add(outputs, ops.reshape(self.bias, shape))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update(
            epsilon=self.epsilon,
            unbiased=self.unbiased,
            epsilon_placement=self.epsilon_placement,
        )
        return config


class ScaledWeightStandardization(WeightStandardization):
    """Mixin for NF-Nets' scaled WS: fan-in scaling, a learnable gain per
    output channel and the activation gain `gamma` folded into the
    kernel."""

    scaled = True

    def __init__(
        self,
        *args,
        gamma=1.0,
        use_gain=True,
        epsilon=1e-4,
        epsilon_placement="floor",
        unbiased=False,
        **kwargs,
    ):
        kwargs.setdefault("kernel_initializer", scaled_kernel_initializer())
        super().__init__(
            *args,
            epsilon=epsilon,
            unbiased=unbiased,
            epsilon_placement=epsilon_placement,
            **kwargs,
        )
        self.gamma = check_gamma(gamma)
        self.use_gain = validation.check_bool("use_gain", use_gain)
        self.gain = None

    def build(self, input_shape):
        super().build(input_shape)
        if self.use_gain:
            self.gain = self.add_weight(
                shape=(self.filters,),
                name="gain",
                initializer=initializers.Ones(),
            )

    # Keras's convolutions save `kernel` and `bias` by position; the gain
    # goes after them.
    def save_own_variables(self, store):
        super().save_own_variables(store)
        if self.built and self.gain is not None:
            store[str(1 + int(self.use_bias))] = self.gain

    def load_own_variables(self, store):
        super().load_own_variables(store)
        if self.built and self.gain is not None:
            self.gain.assign(store[str(1 + int(self.use_bias))])

    def get_config(self):
        config = super().get_config()
        config.update(gamma=self.gamma, use_gain=self.use_gain)
        return config


def scaled_kernel_initializer():
    """NF-Nets' default: VarianceScaling(1, fan_in, normal)."""
    return initializers.VarianceScaling(1.0, "fan_in", "untruncated_normal")


_WS_DOC = """Weight-standardized `keras.layers.{base}` (Qiao et al.).

Each call standardizes every output channel of the kernel over its fan-in
(the kernel's other axes) before the {what}:

```
W_hat[..., o] = (W[..., o] - mean(W[..., o])) / (std(W[..., o]) + epsilon)
```

with the unbiased standard deviation and `epsilon` outside the square root,
as in the official code. The kernel variable keeps the raw weights.
Training and inference behave the same. Pair it with a normalization of
the activations (GroupNormalization, BatchChannelNormalization): Qiao et
al. show that the two together train at one or two images per device.

Args:
    {args}
    epsilon: a float > 0. Defaults to `1e-5`.
    unbiased: whether the variance divides by `N - 1` (official code,
        default) or by `N` (timm, Flax/BiT).
    epsilon_placement: `"outside"` (default, official code):
        `1 / (std + epsilon)`; `"inside"`: `1 / sqrt(var + epsilon)` (timm's
        `StdConv2d`, with `unbiased=False, epsilon=1e-6`); `"floor"`:
        `1 / sqrt(max(var, epsilon))`.
    **kwargs: the other arguments of `keras.layers.{base}`.

Example:

>>> import keras, keras_batchopt
>>> import numpy as np
>>> layer = keras_batchopt.layers.{name}({example_args})
>>> y = layer(np.ones({example_shape}, "float32"))
>>> w = layer.standardized_kernel(layer.kernel)
>>> w = keras.ops.convert_to_numpy(w).reshape(-1, 8)
>>> bool(np.allclose(w.mean(0), 0, atol=1e-6))
True
>>> bool(np.allclose(w.std(0, ddof=1), 1, atol=1e-3))
True

Note:
    The paper's repositories differ in where epsilon goes: the official
    PyTorch code uses the unbiased std plus 1e-5; its BCN code
    `sqrt(unbiased var + 1e-5)`; timm `sqrt(biased var + 1e-6)`.
    `unbiased` and `epsilon_placement` select any of them.

References:
    - Qiao et al., 2019, [Micro-Batch Training with Batch-Channel
      Normalization and Weight Standardization](
      https://arxiv.org/abs/1903.10520)
"""

_SCALED_DOC = """Scaled weight-standardized `keras.layers.{base}` (NF-Nets).

Each call standardizes every output channel of the kernel over its fan-in
`N`, scales it by `1 / sqrt(N)` so that its sum of squares is 1, and
multiplies it by a learnable gain and the gain `gamma` of the activation
feeding the layer:

```
W_hat[..., o] = gain[o] * gamma * (W[..., o] - mean)
                / sqrt(max(N * var(W[..., o]), epsilon))
```

with the biased variance and `epsilon` as a floor, as in DeepMind's
NF-Nets code. The bias is added as usual. Training and inference behave
the same. The layer keeps the signal's variance in networks without
normalization layers (NF-Nets, FedWon).

Args:
    {args}
    gamma: the gain of the activation that produces this layer's input: a
        float > 0, or an activation name looked up in NF-Nets' table
        (`"relu"` is 1.7139...; see `nonlinearity_gain`). Defaults to 1.
    use_gain: whether to learn a gain per output channel, initialized to
        1. Defaults to `True`.
    epsilon: a float > 0. Defaults to `1e-4`.
    epsilon_placement: `"floor"` (default, DeepMind):
        `1 / sqrt(max(N var, epsilon))`; `"inside"`:
        `1 / sqrt(N (var + epsilon))` (timm's `ScaledStdConv2d`, whose
        default epsilon is 1e-6); `"outside"`: `1 / (sqrt(N var) +
        epsilon)`.
    unbiased: whether the variance divides by `N - 1`. Defaults to
        `False`, as in NF-Nets.
    **kwargs: the other arguments of `keras.layers.{base}`. The default
        `kernel_initializer` is NF-Nets' `VarianceScaling(1, "fan_in",
        "untruncated_normal")`.

Example:

>>> import keras, keras_batchopt
>>> import numpy as np
>>> layer = keras_batchopt.layers.{name}({example_args}, gamma="relu")
>>> y = layer(np.ones({example_shape}, "float32"))
>>> w = layer.standardized_kernel(layer.kernel)
>>> w = keras.ops.convert_to_numpy(w).reshape(-1, 8)
>>> np.round(np.sqrt(np.square(w).sum(0)), 3)[:2]  # gamma for relu
array([1.714, 1.714], dtype=float32)

Note:
    DeepMind applies `gamma` to the activation's output; folding it into
    the next layer's kernel, as timm does, gives the same network.

References:
    - Brock, De, Smith and Simonyan, 2021, [High-Performance Large-Scale
      Image Recognition Without Normalization](
      https://arxiv.org/abs/2102.06171)
    - Qiao et al., 2019, [Micro-Batch Training with Batch-Channel
      Normalization and Weight Standardization](
      https://arxiv.org/abs/1903.10520)
"""

_CONV_ARGS = "filters, kernel_size: as in `keras.layers.{base}`."


def docstring(name, base, example_args, example_shape, scaled=False):
    """The docstring of a (scaled) weight-standardized layer."""
    template = _SCALED_DOC if scaled else _WS_DOC
    what = "matrix product" if base == "Dense" else "convolution"
    args = (
        "units: as in `keras.layers.Dense`."
        if base == "Dense"
        else (_CONV_ARGS.format(base=base))
    )
    return template.format(
        name=name,
        base=base,
        what=what,
        args=args,
        example_args=example_args,
        example_shape=example_shape,
    )
