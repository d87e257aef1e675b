import keras

from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.convolutional import weight_standardization


@keras_batchopt_export("keras_batchopt.layers.ScaledWSConv1D")
class ScaledWSConv1D(
    weight_standardization.ScaledWeightStandardization, keras.layers.Conv1D
):
    __doc__ = weight_standardization.docstring(
        "ScaledWSConv1D", "Conv1D", "8, 3", "(2, 8, 3)", scaled=True
    )
