"""Adapting models: BatchNormalization surgery, training only the
normalization layers, and scaling the residual branches of a
normalization-free network."""

from keras_batchopt.src.adaptation.normalization_only import (
    train_only_normalization as train_only_normalization,
)
from keras_batchopt.src.adaptation.residual_scaling import (
    scale_residuals as scale_residuals,
)
from keras_batchopt.src.adaptation.surgery import (
    convert_batch_normalization as convert_batch_normalization,
)
from keras_batchopt.src.adaptation.surgery import (
    to_batch_normalization as to_batch_normalization,
)
