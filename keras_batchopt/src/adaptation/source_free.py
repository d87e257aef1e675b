"""Losses of source-free BN adaptation (Liu et al., MICCAI 2021)."""

from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.adaptation.momentum_decay import momentum_decay_layers
from keras_batchopt.src.api_export import keras_batchopt_export


def channel_transferability(layer):
    """TransNorm's per-channel transferability of one layer, from the
    source and the adapted moving statistics (no gradient):
    `alpha = C * (1 / (1 + d)) / sum(1 / (1 + d))` with `d = |mu_s /
    sqrt(var_s + eps) - mu_t / sqrt(var_t + eps)|`; it averages 1."""
    started = layer.adapted_batches.value > 0
    target_mean = layer.moving_mean.value
    target_variance = layer.moving_variance.value
    source_mean = ops.where(started, layer.source_mean.value, target_mean)
    source_variance = ops.where(
        started, layer.source_variance.value, target_variance
    )
    distance = ops.abs(
        source_mean / ops.sqrt(source_variance + layer.epsilon)
        - target_mean / ops.sqrt(target_variance + layer.epsilon)
    )
    probability = 1.0 / (1.0 + distance)
    channels = ops.cast(ops.shape(probability)[0], probability.dtype)
    alpha = channels * probability / ops.sum(probability)
    return ops.stop_gradient(alpha)


def _affine_distance(layer):
    """`|gamma - gamma_s| + |beta - beta_s|` per channel (0 before the
    first adapted batch, when the layer holds the source values)."""
    started = layer.adapted_batches.value > 0
    total = 0.0
    for current, source in (
        (layer.gamma, layer.source_gamma),
        (layer.beta, layer.source_beta),
    ):
        if current is None:
            continue
        value = current.value
        source = ops.where(started, source.value, ops.stop_gradient(value))
        total = total + ops.abs(value - source)
    return total


@keras_batchopt_export(
    "keras_batchopt.adaptation.batch_normalization_consistency_loss"
)
def batch_normalization_consistency_loss(model, transferability=True):
    """Liu et al.'s high-order statistics consistency: the distance of
    each BN layer's scale and offset from their source values, weighted
    per channel by its transferability.

    In source-free adaptation, the mean and variance of each BN layer
    (low-order statistics) are domain-specific: they adapt to the target
    data with an exponentially decaying momentum
    (`keras_batchopt.layers.MomentumDecayBatchNormalization`). The scale
    `gamma` and offset `beta` (high-order statistics) are taken to be
    shared by the domains: when they are trained on the target data (for
    example with `self_entropy_loss`), this loss keeps them near their
    source values:

    ```
    loss = sum over layers l, channels n of
        alpha[l, n] * (|gamma[l, n] - gamma_s[l, n]|
                       + |beta[l, n] - beta_s[l, n]|)
    alpha[l] = C * (1 / (1 + d[l])) / sum_n(1 / (1 + d[l, n]))
    d[l] = |mu_s / sqrt(var_s + eps) - mu_t / sqrt(var_t + eps)|
    ```

    with `gamma_s`, `beta_s`, `mu_s`, `var_s` the source values (each
    layer's snapshot at its first adapted batch), `mu_t`, `var_t` the
    adapted moving statistics, and `C` the layer's channels. A channel
    whose statistics moved little is more transferable and weighs more;
    the weights of a layer average 1. They carry no gradient. Before a
    layer's first adapted batch its term is 0.

    Use it in a custom training loop or in an overridden
    `Model.compute_loss` (see the Example); the model is called in
    training mode (batch statistics, the decaying momentum) as Liu et
    al. train.

    Args:
        model: a `keras.Model` (or layer) with
            `MomentumDecayBatchNormalization` layers; the others are not
            counted.
        transferability: whether to weigh channels by their
            transferability (default) or equally (`alpha = 1`).

    Returns:
        A scalar float32 tensor.

    Example:

    >>> import numpy as np
    >>> import keras, keras_batchopt
    >>> from keras_batchopt import adaptation
    >>> class Adapted(keras.Model):
    ...     def compute_loss(self, x=None, y=None, y_pred=None,
    ...                      sample_weight=None, training=True):
    ...         return (adaptation.batch_normalization_consistency_loss(self)
    ...                 + adaptation.self_entropy_loss(y_pred, True))
    >>> inputs = keras.Input((4,))
    >>> h = keras_batchopt.layers.MomentumDecayBatchNormalization()(inputs)
    >>> model = Adapted(inputs, keras.layers.Dense(3)(h))
    >>> model.compile(optimizer="sgd")
    >>> x = np.random.default_rng(0).normal(size=(16, 4))
    >>> _ = model.fit(x, epochs=2, batch_size=8, verbose=0)
    >>> loss = adaptation.batch_normalization_consistency_loss(model)
    >>> bool(loss > 0.0)
    True

    Note:
        No official code of Liu et al. was found. The transferability
        follows the official TransNorm code (`src/trans_norm.py` of
        https://github.com/thuml/TransNorm at commit
        713c2e28a0d8e73cac7aaf9b30b47e7654ac1939, its test-mode `alpha`),
        whose use for this weighting the abstract of Liu et al. states.
        The L1 distance, the weights `alpha` (rather than TransNorm's
        residual `1 + alpha`) and the sum over channels and layers are
        this implementation's reading of the method; the paper's
        equations could not be checked against its full text when this
        was written.

    References:
        - Liu, Xing, Yang, El Fakhri and Woo, 2021, [Adapting
          Off-the-Shelf Source Segmenter for Target Medical Image
          Segmentation](https://arxiv.org/abs/2106.12497) (MICCAI 2021).
        - Wang, Jin, Long, Wang and Jordan, 2019, [Transferable
          Normalization: Towards Improving Transferability of Deep
          Neural Networks](https://papers.nips.cc/paper/2019/hash/
          fd2c5e4680d9a01dba3aada5ece22270-Abstract.html) (NeurIPS 2019).
    """
    found = momentum_decay_layers(model)
    validation.check_bool("transferability", transferability)
    total = ops.zeros((), "float32")
    for layer in found:
        distance = _affine_distance(layer)
        if isinstance(distance, float):  # center=False and scale=False
            continue
        if transferability:
            distance = channel_transferability(layer) * distance
        total = total + ops.sum(distance)
    return total


@keras_batchopt_export("keras_batchopt.adaptation.self_entropy_loss")
def self_entropy_loss(y_pred, from_logits=False, axis=-1):
    """The mean Shannon entropy of the predicted class probabilities.

    `-sum_c p_c * log(p_c)` over the class axis `axis`, averaged over
    every other axis (the samples, and the pixels of a segmentation).
    Minimizing it on unlabeled target data makes the predictions
    confident; Liu et al. add it to the consistency loss
    (`batch_normalization_consistency_loss`).

    Args:
        y_pred: predicted probabilities, or logits with `from_logits=True`.
        from_logits: whether `y_pred` holds logits (a softmax is then
            taken over `axis`).
        axis: the class axis, an int. Defaults to `-1`.

    Returns:
        A scalar tensor, in nats.

    Example:

    >>> import numpy as np, keras_batchopt
    >>> p = np.array([[0.5, 0.5], [1.0, 0.0]], "float32")
    >>> round(float(keras_batchopt.adaptation.self_entropy_loss(p)), 4)
    0.3466

    References:
        - Liu, Xing, Yang, El Fakhri and Woo, 2021, [Adapting
          Off-the-Shelf Source Segmenter for Target Medical Image
          Segmentation](https://arxiv.org/abs/2106.12497) (MICCAI 2021).
        - Wang, Shelhamer, Liu, Olshausen and Darrell, 2021, [Tent: Fully
          Test-time Adaptation by Entropy Minimization](
          https://arxiv.org/abs/2006.10726) (the same entropy).
    """
    validation.check_bool("from_logits", from_logits)
    if isinstance(axis, bool) or not isinstance(axis, int):
        validation.fail("axis", "an int", axis)
    y_pred = ops.convert_to_tensor(y_pred)
    if from_logits:
        log_p = ops.log_softmax(y_pred, axis=axis)
        p = ops.exp(log_p)
    else:
        p = y_pred
        # 0 * log(0) is 0 (and no NaN in the gradient): log(1) there.
        log_p = ops.log(ops.where(p > 0, p, ops.ones_like(p)))
    return ops.mean(-ops.sum(p * log_p, axis=axis))
