"""Adapting trained models: BatchNormalization surgery and training only
the normalization layers."""

from keras_batchopt.src.adaptation.normalization_only import (
    train_only_normalization as train_only_normalization,
)
from keras_batchopt.src.adaptation.surgery import (
    convert_batch_normalization as convert_batch_normalization,
)
from keras_batchopt.src.adaptation.surgery import (
    to_batch_normalization as to_batch_normalization,
)
