"""Public switches of keras_batchopt."""

from keras_batchopt.src.config import disable_fast_paths as disable_fast_paths
from keras_batchopt.src.config import enable_fast_paths as enable_fast_paths
from keras_batchopt.src.config import fast_paths as fast_paths
from keras_batchopt.src.config import fast_paths_enabled as fast_paths_enabled
from keras_batchopt.src.config import set_torch_compile as set_torch_compile
from keras_batchopt.src.config import (
    torch_compile_enabled as torch_compile_enabled,
)
from keras_batchopt.src.config import torch_compile_mode as torch_compile_mode
