"""Public optimizers of keras_batchopt."""

from keras_batchopt.src.optimizers.adan import Adan as Adan
from keras_batchopt.src.optimizers.batch_optimizer import (
    BatchOptimizer as BatchOptimizer,
)
from keras_batchopt.src.optimizers.lamb import Lamb as Lamb
from keras_batchopt.src.optimizers.lars import Lars as Lars
