"""Batch-level training strategies: what a mini-batch is and how a training
step uses it (hard mini-batch selection, concurrent adversarial training,
BatchFormer's shared classifier, noise assignment for diffusion)."""

from keras_batchopt.src.strategies.assign_noise import (
    assign_noise as assign_noise,
)
from keras_batchopt.src.strategies.batchformer_training import (
    enable_batchformer_training as enable_batchformer_training,
)
from keras_batchopt.src.strategies.concurrent_adversarial import (
    enable_concurrent_adversarial_training as enable_concurrent_adversarial_training,  # noqa: E501
)
from keras_batchopt.src.strategies.hard_batch_dataset import (
    HardBatchDataset as HardBatchDataset,
)
from keras_batchopt.src.strategies.hard_batch_selection import (
    HardBatchSelection as HardBatchSelection,
)
from keras_batchopt.src.strategies.nearest_noise import (
    nearest_noise as nearest_noise,
)
from keras_batchopt.src.strategies.nearest_noise import (
    sample_nearest_noise as sample_nearest_noise,
)
