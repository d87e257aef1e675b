"""Adapting trained models: BatchNormalization surgery, training only
the normalization layers, test-time and source-free BN adaptation, and
scaling the residual branches of a normalization-free network."""

from keras_batchopt.src.adaptation.momentum_decay import (
    adapt_on_sample as adapt_on_sample,
)
from keras_batchopt.src.adaptation.normalization_only import (
    train_only_normalization as train_only_normalization,
)
from keras_batchopt.src.adaptation.residual_scaling import (
    scale_residuals as scale_residuals,
)
from keras_batchopt.src.adaptation.source_free import (
    batch_normalization_consistency_loss as batch_normalization_consistency_loss,  # noqa: E501
)
from keras_batchopt.src.adaptation.source_free import (
    self_entropy_loss as self_entropy_loss,
)
from keras_batchopt.src.adaptation.surgery import (
    convert_batch_normalization as convert_batch_normalization,
)
from keras_batchopt.src.adaptation.surgery import (
    to_batch_normalization as to_batch_normalization,
)
