import keras

from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.convolutional import weight_standardization


@keras_batchopt_export("keras_batchopt.layers.ScaledWSConv3D")
class ScaledWSConv3D(
    weight_standardization.ScaledWeightStandardization, keras.layers.Conv3D
):
    __doc__ = weight_standardization.docstring(
        "ScaledWSConv3D", "Conv3D", "8, 3", "(2, 4, 4, 4, 3)", scaled=True
    )
