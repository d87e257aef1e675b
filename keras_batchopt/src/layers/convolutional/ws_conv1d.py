import keras

from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.convolutional import weight_standardization


@keras_batchopt_export("keras_batchopt.layers.WSConv1D")
class WSConv1D(
    weight_standardization.WeightStandardization, keras.layers.Conv1D
):
    __doc__ = weight_standardization.docstring(
        "WSConv1D", "Conv1D", "8, 3", "(2, 8, 3)"
    )
