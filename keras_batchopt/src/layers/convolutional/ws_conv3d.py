import keras

from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.convolutional import weight_standardization


@keras_batchopt_export("keras_batchopt.layers.WSConv3D")
class WSConv3D(
    weight_standardization.WeightStandardization, keras.layers.Conv3D
):
    __doc__ = weight_standardization.docstring(
        "WSConv3D", "Conv3D", "8, 3", "(2, 4, 4, 4, 3)"
    )
