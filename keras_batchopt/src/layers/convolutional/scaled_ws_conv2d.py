import keras

from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.convolutional import weight_standardization


@keras_batchopt_export("keras_batchopt.layers.ScaledWSConv2D")
class ScaledWSConv2D(
    weight_standardization.ScaledWeightStandardization, keras.layers.Conv2D
):
    __doc__ = weight_standardization.docstring(
        "ScaledWSConv2D", "Conv2D", "8, 3", "(2, 8, 8, 3)", scaled=True
    )
