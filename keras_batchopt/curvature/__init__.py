"""Curvature tools: Hessian-vector products, Hutchinson estimates, top
eigenvalues and spectral densities of a Keras model's loss, and the
training step that feeds AdaHessian."""

from keras_batchopt.src.curvature.eigenvalues import (
    top_hessian_eigenvalues as top_hessian_eigenvalues,
)
from keras_batchopt.src.curvature.hessian_vector_product import (
    hessian_vector_product as hessian_vector_product,
)
from keras_batchopt.src.curvature.hutchinson import (
    hutchinson_diagonal as hutchinson_diagonal,
)
from keras_batchopt.src.curvature.hutchinson import (
    hutchinson_trace as hutchinson_trace,
)
from keras_batchopt.src.curvature.probes import (
    rademacher_probes as rademacher_probes,
)
from keras_batchopt.src.curvature.spectral_density import (
    hessian_spectral_density as hessian_spectral_density,
)
from keras_batchopt.src.curvature.train_step import (
    HessianTrainStep as HessianTrainStep,
)
from keras_batchopt.src.curvature.train_step import (
    enable_hessian_training as enable_hessian_training,
)
