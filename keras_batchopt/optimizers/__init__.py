"""Public optimizers of keras_batchopt."""

from keras_batchopt.src.optimizers.ada_hessian import AdaHessian as AdaHessian
from keras_batchopt.src.optimizers.adagrad_norm import (
    AdaGradNorm as AdaGradNorm,
)
from keras_batchopt.src.optimizers.adan import Adan as Adan
from keras_batchopt.src.optimizers.batch_optimizer import (
    BatchOptimizer as BatchOptimizer,
)
from keras_batchopt.src.optimizers.lamb import Lamb as Lamb
from keras_batchopt.src.optimizers.lars import Lars as Lars
from keras_batchopt.src.optimizers.sgd_sai import SGDSaI as SGDSaI
from keras_batchopt.src.optimizers.sink_gd import SinkGD as SinkGD
