"""Batch-level training strategies: what a mini-batch is and how a training
step uses it (hard mini-batch selection, concurrent adversarial training,
BatchFormer's shared classifier, noise assignment for diffusion)."""

from keras_batchopt.src.strategies.hard_batch_dataset import (
    HardBatchDataset as HardBatchDataset,
)
from keras_batchopt.src.strategies.hard_batch_selection import (
    HardBatchSelection as HardBatchSelection,
)
