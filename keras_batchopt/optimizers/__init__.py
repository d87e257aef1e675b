"""Public optimizers of keras_batchopt.

After `import keras_batchopt`, Keras also builds them from string names,
as it builds its own from `"adam"`: `model.compile(optimizer="adan")`, or
`keras.optimizers.get(name)`, for the names "ada_hessian", "adagrad_norm",
"adan", "lars", "sgd_sai" and "sink_gd". `"lamb"` stays Keras's
`keras.optimizers.Lamb`; ours is `"keras_batchopt>Lamb"`.
"""

from keras_batchopt.src.optimizers import string_names as _string_names
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
from keras_batchopt.src.optimizers.normalize_and_project import (
    NormalizeAndProject as NormalizeAndProject,
)
from keras_batchopt.src.optimizers.sgd_sai import SGDSaI as SGDSaI
from keras_batchopt.src.optimizers.sink_gd import SinkGD as SinkGD

# `compile(optimizer="adan")`: the snake_case names of
# keras_batchopt.src.optimizers.string_names (Lamb: "keras_batchopt>Lamb").
_string_names.register_string_names()
