"""Taps on Dense layers: their inputs, and a zero added to their outputs
before the activation, whose gradient is the loss's output gradient.

While a `DenseTaps` is active, each tapped layer runs Dense's own
computation (``activation(inputs @ kernel + bias)``) with ``+ zero`` before
the activation, and records its inputs. The gradient of one sample's loss
with respect to that zero is ``delta_i``, the gradient at the layer's
output; with the recorded inputs ``a_i`` it gives the statistics of the
kernel's per-sample gradients ``sum_t a_it delta_it^T`` without forming
them (see `statistics.dense_kernel_parts`).
"""

import contextlib

import keras
from keras import ops


def _nested_in_wrapper(model):
    """Ids of layers inside a `keras.layers.Wrapper` (such as
    `TimeDistributed`, which may call its layer once per time step)."""
    inside = set()
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.Wrapper):
            for sub in layer._flatten_layers(include_self=False):
                inside.add(id(sub))
    return inside


def candidates(model):
    """The trainable, plain `keras.layers.Dense` layers of `model` (no
    subclass, LoRA or quantization), whose kernel is one of the model's
    trainable variables."""
    trainable = {id(v) for v in model.trainable_variables}
    wrapped = _nested_in_wrapper(model)
    found = []
    for layer in model._flatten_layers(include_self=False):
        if (
            type(layer) is keras.layers.Dense
            and id(layer) not in wrapped
            and not getattr(layer, "lora_enabled", False)
            and getattr(layer, "quantization_mode", None) is None
            and id(layer.kernel) in trainable
        ):
            found.append(layer)
    return found


class DenseTaps:
    """Taps a list of Dense layers while `active(...)` is entered.

    Attributes:
        layers: the tapped layers.
        calls: per layer, how often it ran during the last `active` block.
        inputs: per layer, the inputs of its last call.
        output_shapes: per layer, the shape of its last output.
    """

    def __init__(self, layers):
        self.layers = list(layers)
        self.zeros = None
        self.calls = [0] * len(self.layers)
        self.inputs = [None] * len(self.layers)
        self.output_shapes = [None] * len(self.layers)

    def _tap(self, slot, inputs, outputs):
        self.calls[slot] += 1
        self.inputs[slot] = inputs
        self.output_shapes[slot] = tuple(outputs.shape)
        if self.zeros is None:
            return outputs
        return ops.add(outputs, ops.cast(self.zeros[slot], outputs.dtype))

    def _call(self, slot):
        layer = self.layers[slot]

        def call(inputs, training=None):
            outputs = ops.matmul(inputs, layer.kernel)
            if layer.bias is not None:
                outputs = ops.add(outputs, layer.bias)
            outputs = self._tap(slot, inputs, outputs)
            if layer.activation is not None:
                outputs = layer.activation(outputs)
            return outputs

        return call

    @contextlib.contextmanager
    def active(self, zeros=None):
        """Taps the layers; `zeros` (one tensor per layer, of its output's
        shape) are added before the activation, or nothing when None."""
        self.zeros = zeros
        self.calls = [0] * len(self.layers)
        self.inputs = [None] * len(self.layers)
        saved = [layer.__dict__.get("call") for layer in self.layers]
        for slot, layer in enumerate(self.layers):
            object.__setattr__(layer, "call", self._call(slot))
        try:
            yield self
        finally:
            for layer, own in zip(self.layers, saved):
                object.__delattr__(layer, "call")
                if own is not None:
                    object.__setattr__(layer, "call", own)
            self.zeros = None
