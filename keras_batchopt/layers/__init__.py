"""Public normalization, weight-standardized and residual-scaling layers of
keras_batchopt."""

from keras_batchopt.src.layers.attention.batch_former import (
    BatchFormer as BatchFormer,
)
from keras_batchopt.src.layers.convolutional.scaled_ws_conv1d import (
    ScaledWSConv1D as ScaledWSConv1D,
)
from keras_batchopt.src.layers.convolutional.scaled_ws_conv2d import (
    ScaledWSConv2D as ScaledWSConv2D,
)
from keras_batchopt.src.layers.convolutional.scaled_ws_conv3d import (
    ScaledWSConv3D as ScaledWSConv3D,
)
from keras_batchopt.src.layers.convolutional.weight_standardization import (
    nonlinearity_gain as nonlinearity_gain,
)
from keras_batchopt.src.layers.convolutional.ws_conv1d import (
    WSConv1D as WSConv1D,
)
from keras_batchopt.src.layers.convolutional.ws_conv2d import (
    WSConv2D as WSConv2D,
)
from keras_batchopt.src.layers.convolutional.ws_conv3d import (
    WSConv3D as WSConv3D,
)
from keras_batchopt.src.layers.convolutional.ws_dense import WSDense as WSDense
from keras_batchopt.src.layers.normalization.alpha_batch_normalization import (  # noqa: E501
    AlphaBatchNormalization as AlphaBatchNormalization,
)
from keras_batchopt.src.layers.normalization.balanced_batch_normalization import (  # noqa: E501
    BalancedBatchNormalization as BalancedBatchNormalization,
)
from keras_batchopt.src.layers.normalization.balanced_batch_normalization import (  # noqa: E501
    set_current_task as set_current_task,
)
from keras_batchopt.src.layers.normalization.batch_channel_normalization import (  # noqa: E501
    BatchChannelNormalization as BatchChannelNormalization,
)
from keras_batchopt.src.layers.normalization.channel_affine import (  # noqa: E501
    ChannelAffine as ChannelAffine,
)
from keras_batchopt.src.layers.normalization.folding import (  # noqa: E501
    fold_normalization as fold_normalization,
)
from keras_batchopt.src.layers.normalization.ghost_batch_normalization import (
    GhostBatchNormalization as GhostBatchNormalization,
)
from keras_batchopt.src.layers.normalization.instance_batch_normalization import (  # noqa: E501
    InstanceBatchNormalization as InstanceBatchNormalization,
)
from keras_batchopt.src.layers.normalization.momentum_decay_batch_normalization import (  # noqa: E501
    MomentumDecayBatchNormalization as MomentumDecayBatchNormalization,
)
from keras_batchopt.src.layers.normalization.power_normalization import (  # noqa: E501
    PowerNormalization as PowerNormalization,
)
from keras_batchopt.src.layers.normalization.progressive_rep_bn import (  # noqa: E501
    ProgressiveRepBN as ProgressiveRepBN,
)
from keras_batchopt.src.layers.normalization.region_normalization import (
    RegionNormalization as RegionNormalization,
)
from keras_batchopt.src.layers.normalization.rep_batch_normalization import (  # noqa: E501
    RepBatchNormalization as RepBatchNormalization,
)
from keras_batchopt.src.layers.normalization.unified_normalization import (  # noqa: E501
    UnifiedNormalization as UnifiedNormalization,
)
from keras_batchopt.src.layers.normalization.unmix_test_time_normalization import (  # noqa: E501
    UnMixTestTimeNormalization as UnMixTestTimeNormalization,
)
from keras_batchopt.src.layers.residual.scaled_residual import (
    ScaledResidual as ScaledResidual,
)
