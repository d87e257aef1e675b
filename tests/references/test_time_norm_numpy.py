"""NumPy (float64) references of the official test-time normalization
modules, in their NCHW layout.

alpha-BN: `AlphaBatchNorm.forward` of `tta_experiments/methods/bn.py` in
https://github.com/devavratTomar/unmixtns at commit
8e12b9f03f394290eb89df58e17d949f082d5152 (the UnMix-TNS repository, which
runs alpha-BN as its `bnalpha` baseline with `BN.ALPHA = 0.1` in
`tta_experiments/conf.py`; the module builds on bethgelab/robustness's
`batchnorm/bn.py`). The authors of alpha-BN (You et al., 2021) published
no code that we could find. The forward:

    self.norm(input)      # BatchNorm2d(affine=False, momentum=1.0), train
    running_mean = (1 - alpha) * layer.running_mean
                   + alpha * self.norm.running_mean
    running_var  = (1 - alpha) * layer.running_var
                   + alpha * self.norm.running_var
    F.batch_norm(input, running_mean, running_var, layer.weight,
                 layer.bias, training=False, eps=layer.eps)

With `momentum=1.0` a PyTorch BatchNorm's running statistics are the
batch mean and the UNBIASED batch variance (`n / (n - 1)` with `n` the
values per channel, batch x spatial positions); `alpha` weighs the test
batch.
"""

import numpy as np


def _channel(v, ndim):
    return np.reshape(v, (1, -1) + (1,) * (ndim - 2))


def source_batch_norm(x, moving_mean, moving_var, gamma, beta, eps):
    """Inference with the source statistics (alpha = 0, where the official
    module is defined)."""
    x = np.asarray(x, np.float64)
    y = (x - _channel(moving_mean, x.ndim)) / np.sqrt(
        _channel(moving_var, x.ndim) + eps
    )
    return y * _channel(gamma, x.ndim) + _channel(beta, x.ndim)


def alpha_batch_norm(x, alpha, moving_mean, moving_var, gamma, beta, eps):
    """The official alpha-BN forward on an NC... array (float64)."""
    x = np.asarray(x, np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    n = x.size / x.shape[1]
    if n < 2:  # PyTorch's BatchNorm in training mode raises
        raise ValueError("Expected more than 1 value per channel")
    test_mean = x.mean(axes)
    test_var = x.var(axes) * n / (n - 1)
    mean = (1 - alpha) * moving_mean + alpha * test_mean
    var = (1 - alpha) * moving_var + alpha * test_var
    return source_batch_norm(x, mean, var, gamma, beta, eps)
