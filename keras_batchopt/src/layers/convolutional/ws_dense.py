import keras
from keras import ops

from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.convolutional import weight_standardization


@keras_batchopt_export("keras_batchopt.layers.WSDense")
class WSDense(weight_standardization.WeightStandardization, keras.layers.Dense):
    __doc__ = weight_standardization.docstring(
        "WSDense", "Dense", "8", "(2, 3)"
    )

    def call(self, inputs, training=None):
        outputs = ops.matmul(inputs, self.standardized_kernel(self.kernel))
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def quantize(self, mode, **kwargs):
        raise NotImplementedError(
            "WSDense standardizes its float kernel at every call and cannot "
            f"be quantized. Received: mode={mode!r}"
        )
