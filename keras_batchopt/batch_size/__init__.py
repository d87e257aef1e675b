"""Adaptive batch sizes (AdAdaGrad) and per-sample gradient statistics."""

from keras_batchopt.src.batch_size.adaptive_batch_dataset import (
    AdaptiveBatchDataset as AdaptiveBatchDataset,
)
from keras_batchopt.src.batch_size.adaptive_batch_size import (
    AdaptiveBatchSize as AdaptiveBatchSize,
)
from keras_batchopt.src.batch_size.per_sample import (
    gradient_statistics as gradient_statistics,
)
from keras_batchopt.src.batch_size.statistics import (
    augmented_inner_product_test as augmented_inner_product_test,
)
from keras_batchopt.src.batch_size.statistics import (
    inner_product_test as inner_product_test,
)
from keras_batchopt.src.batch_size.statistics import norm_test as norm_test
from keras_batchopt.src.batch_size.statistics import (
    orthogonality_test as orthogonality_test,
)
