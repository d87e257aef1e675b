"""keras_batchopt: batch-level training methods for Keras 3.

Optimizers, schedules and normalization layers from recent papers, written
once in `keras.ops` and run on TensorFlow, JAX and PyTorch.
"""

from keras_batchopt import adaptation as adaptation
from keras_batchopt import batch_size as batch_size
from keras_batchopt import config as config
from keras_batchopt import curvature as curvature
from keras_batchopt import layers as layers
from keras_batchopt import optimizers as optimizers
from keras_batchopt import schedules as schedules
from keras_batchopt import strategies as strategies
from keras_batchopt.src.version import __version__ as __version__
