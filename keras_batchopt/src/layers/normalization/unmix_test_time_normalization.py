import keras
from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.normalization import statistics
from keras_batchopt.src.layers.normalization.alpha_batch_normalization import (
    FAST_MODULE,
)
from keras_batchopt.src.layers.normalization.alpha_batch_normalization import (
    batch_moments,
)
from keras_batchopt.src.layers.normalization.base import ChannelNormalization

# PyTorch's `F.normalize` divides by max(norm, 1e-12).
NORMALIZE_EPSILON = 1e-12


def _unit_rows(x):
    """Each row of the 2-D `x` divided by its L2 norm, as `F.normalize`."""
    norm = ops.sqrt(ops.sum(ops.square(x), axis=1, keepdims=True))
    return x / ops.maximum(norm, NORMALIZE_EPSILON)


def instance_moments(x, axis):
    """Per-instance, per-channel mean and biased variance over the spatial
    axes (every axis but the batch and `axis`), each of shape
    `(batch, channels)`."""
    axes = statistics.reduction_axes(len(x.shape), axis)
    mean, variance, _ = statistics.weighted_moments(x, None, axes)
    channels = x.shape[axis]
    return (
        ops.reshape(mean, (-1, channels)),
        ops.reshape(variance, (-1, channels)),
    )


def assignment(inst_mean, means, temperature):
    """`p[i, k] = softmax_k(cos(inst_mean[i], means[k]) / temperature)`,
    without gradient."""
    if means.shape[0] == 1:  # one component: p = 1
        return ops.ones_like(inst_mean[:, :1])
    similarity = ops.matmul(
        _unit_rows(inst_mean), ops.transpose(_unit_rows(means))
    )
    probs = ops.softmax(similarity / temperature, axis=1)
    return ops.stop_gradient(probs)


def mixed_statistics(probs, inst_mean, inst_var, means, variances):
    """Per-instance mean and variance of the K components, each moved
    towards the instance by its assignment: component `k` of instance `i`
    has mean `(1 - p_ik) mu_k + p_ik mu_i` and variance `(1 - p_ik)
    var_k + p_ik var_i`; the K are pooled with equal weights by the law of
    total variance. Shapes `(batch, channels)`."""
    p = probs[:, :, None]
    mean_mat = (1.0 - p) * means[None] + p * inst_mean[:, None]
    var_mat = (1.0 - p) * variances[None] + p * inst_var[:, None]
    mean, variance = statistics.pooled_moments(mean_mat, var_mat, None, 1)
    return mean[:, 0], variance[:, 0]


def component_update(probs, inst_mean, inst_var, means, variances, rate):
    """`mu_k + rate * mean_i(p_ik (mu_i - mu_k))` and likewise for the
    variances: the official online update of the components."""
    p = probs[:, :, None]
    step_mean = ops.mean(p * (inst_mean[:, None] - means[None]), axis=0)
    step_var = ops.mean(p * (inst_var[:, None] - variances[None]), axis=0)
    return means + rate * step_mean, variances + rate * step_var


@keras_batchopt_export("keras_batchopt.layers.UnMixTestTimeNormalization")
class UnMixTestTimeNormalization(ChannelNormalization):
    """UnMix-TNS: test-time normalization with K statistics components
    updated online, for test streams whose labels are correlated in time
    (Tomar et al., ICLR 2024).

    Test-time BN normalizes with the statistics of the test batch; when a
    batch holds one or two classes only (a label-sorted or otherwise
    non-i.i.d. stream) those statistics describe the classes, not the
    domain, and accuracy collapses. UnMix-TNS keeps K components of
    per-channel statistics `(mu_k, var_k)`, started around the source
    (moving) statistics, and normalizes each instance with the
    components, each moved towards that instance by how well it fits.

    Components (from a trained BN: `moving_mean`, `moving_variance`):

    ```
    mu_k = moving_mean + sqrt(spread * K / (K - 1))
                         * sqrt(moving_variance) * noise_k
    var_k = (1 - spread) * moving_variance
    ```

    with `noise_k ~ N(0, 1)` per channel, drawn once with `seed` (K = 1:
    the source statistics, no noise). For each instance `i` of a test
    batch, with `mu_i`, `var_i` its mean and biased variance over the
    spatial positions:

    ```
    p_ik = softmax_k(cos(mu_i, mu_k) / temperature)     # no gradient
    m_ik = (1 - p_ik) mu_k + p_ik mu_i
    v_ik = (1 - p_ik) var_k + p_ik var_i
    mean_i = mean_k m_ik
    var_i* = mean_k v_ik + mean_k (m_ik - mean_i)^2     # total variance
    y_i = (x_i - mean_i) / sqrt(var_i* + epsilon) * gamma + beta
    ```

    then, without gradient, after the batch:

    ```
    rate = 1 - adaptation_momentum ** (B / max_batch_size)
    mu_k  += rate * mean_i(p_ik (mu_i - mu_k))
    var_k += rate * mean_i(p_ik (var_i - var_k))
    ```

    with `B = test_batch_size`, or the batch's own size when it is None.
    The output of a batch uses the components from before its update.
    Each instance's output depends on its own values and the components
    only, so batch size 1 works.

    Inputs with one value per channel (rank 2, a `Dense` output): as the
    official code (its `UnMixTNS1d`), they are normalized with the source
    statistics, `keras.layers.BatchNormalization` in inference, and the
    components are not used.

    State: the components (`component_means`, `component_variances`) and
    the noise are non-trainable weights, updated with `assign` in
    inference (`model.predict`, `model(x)`, compiled or not, on every
    backend), and saved with the model. They are started from the moving
    statistics at the first inference call after building, after
    `reset()` or after a training call (which moves the moving
    statistics); `reset()` returns to those initial components. A batch
    whose instance statistics are not all finite (a NaN or Inf in it)
    leaves the components unchanged; its finite instances still get
    finite outputs.

    In training (`training=True` on a trainable layer), it is
    `keras.layers.BatchNormalization`: batch statistics, and the moving
    statistics updated with `momentum`. So a trained Keras model can be
    converted with `keras_batchopt.adaptation.convert_batch_normalization`
    and adapted in inference. The converted model's outputs differ from
    the source model's from the first batch on, for every setting, as in
    the official code: each instance's statistics are mixed in with
    weight `p_ik` (and the components are spread around the source
    statistics). With `num_components=1`, `p_i1 = 1`: instance
    normalization with `gamma` and `beta`.
    Gradients flow through the instance statistics (not the assignment),
    so an entropy loss computed in inference adapts `gamma` and `beta`
    (TENT with UnMix-TNS, as the official code).

    Args:
        num_components: K, the number of statistics components, an int
            >= 1. Defaults to `16`, the official default (the paper uses
            128 for streams mixing several domains).
        temperature: the softmax temperature of the cosine similarities,
            a float > 0. Defaults to `0.07`, hard-coded officially.
        adaptation_momentum: the weight of the old components per
            `max_batch_size` instances, in [0, 1]: Keras's convention, 1
            minus PyTorch's BN momentum, which the official code takes
            from the replaced `BatchNorm2d` (0.1, so `0.9` here, the
            default). `1` freezes the components.
        test_batch_size: None (default) for the size of each batch, or an
            int >= 1: the official code takes the configured test batch
            size (`TEST.BATCH_SIZE`), also for a smaller last batch.
        max_batch_size: an int >= 1. Defaults to `64`
            (`UNMIXTNS.BATCH_SIZE_MAX`; the official ImageNet-C runs use
            16 with batches of 16).
        spread: the share of the source variance that the initial
            component means spread over, in [0, 1]. Defaults to `0.5`,
            hard-coded officially (`coeff`). Ignored for K = 1.
        seed: an int or None, the seed of the initial noise.
        axis: the channel axis, an int. `-1` (default) for channels_last,
            `1` for channels_first.
        momentum: the weight of the old moving statistics in training, in
            [0, 1). Defaults to `0.99`, as in Keras.
        epsilon: a float > 0 added to the variance. Defaults to `1e-3`, as
            in Keras (PyTorch and the official code use `1e-5`).
        center, scale, beta_initializer, gamma_initializer,
        moving_mean_initializer, moving_variance_initializer,
        beta_regularizer, gamma_regularizer, beta_constraint,
        gamma_constraint: as in `keras.layers.BatchNormalization`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        inputs: a tensor of rank >= 2, batch first.
        training: whether to train as Keras's BatchNormalization or to run
            UnMix-TNS.

    Returns:
        A tensor of the same shape, in the layer's compute dtype.

    Example:

    >>> import keras, keras_batchopt
    >>> import numpy as np
    >>> layer = keras_batchopt.layers.UnMixTestTimeNormalization(
    ...     num_components=4, seed=0)
    >>> x = np.random.default_rng(0).normal(size=(2, 5, 5, 3))
    >>> y = layer(x.astype("float32"))  # adapts the components
    >>> tuple(layer.component_means.shape)
    (4, 3)
    >>> layer.reset()  # back to the components before the stream

    Note:
        The official module is the `UnMixTNS2d` / `UnMixTNS1d` pair of
        `tta_experiments/unmixtns.py`, replacing PyTorch's `BatchNorm2d`
        and `BatchNorm1d`; this layer takes any rank >= 3 (statistics over
        every spatial axis) and the rank-2 case. The total variance is
        taken as `mean_k v_ik + mean_k (m_ik - mean_i)^2`, the official
        `mean_k v_ik + mean_k m_ik^2 - mean_i^2` without its float
        cancellation. The official momentum is fixed from the configured
        batch size; `test_batch_size=None` uses each batch's size (the
        same for full batches). The official module mixes in training
        mode too; here training is Keras's BatchNormalization. The
        official code updates the components on every batch; here a
        non-finite batch is skipped. On torch, an
        inference step runs as plain torch operations with the same
        arithmetic (eager `keras.ops` calls on small tensors cost more
        than their work); `keras_batchopt.config.fast_paths(False)` runs
        the generic code.

        The components move slowly (per `max_batch_size` instances, at
        most `1 - adaptation_momentum` of the way to the instances
        assigned to them), and a component that few instances are
        assigned to stays at its random start. On a stream of a few
        thousand images the layer can therefore score below the source
        model, as in the guide `test_time_normalization` (on clean data
        too); `spread=0` starts every component at the source
        statistics.

    References:
        - Tomar, Vray, Thiran and Bozorgtabar, 2024, [Un-Mixing Test-Time
          Normalization Statistics: Combatting Label Temporal Correlation](
          https://arxiv.org/abs/2401.08328), ICLR 2024.
        - Official code: `tta_experiments/unmixtns.py` of
          https://github.com/devavratTomar/unmixtns at commit
          8e12b9f03f394290eb89df58e17d949f082d5152.
    """

    # The state of keras.layers.BatchNormalization, by weight name: the
    # model surgery of keras_batchopt.adaptation converts to and from it
    # (the components are this layer's own state, started lazily).
    batch_normalization_state = True
    # Weights that Keras's BatchNormalization has no counterpart of: the
    # surgery leaves them as built.
    adaptation_state = (
        "component_means",
        "component_variances",
        "component_noise",
        "components_started",
    )

    def __init__(
        self,
        num_components=16,
        temperature=0.07,
        adaptation_momentum=0.9,
        test_batch_size=None,
        max_batch_size=64,
        spread=0.5,
        seed=None,
        axis=-1,
        momentum=0.99,
        epsilon=1e-3,
        **kwargs,
    ):
        super().__init__(
            axis=axis, momentum=momentum, epsilon=epsilon, **kwargs
        )
        self.num_components = validation.check_positive_int(
            "num_components", num_components
        )
        self.temperature = validation.check_positive("temperature", temperature)
        self.adaptation_momentum = validation.check_in_interval(
            "adaptation_momentum", adaptation_momentum, 0.0, 1.0, True, True
        )
        self.test_batch_size = validation.check_positive_int_or_none(
            "test_batch_size", test_batch_size
        )
        self.max_batch_size = validation.check_positive_int(
            "max_batch_size", max_batch_size
        )
        self.spread = validation.check_in_interval(
            "spread", spread, 0.0, 1.0, True, True
        )
        if seed is not None:
            seed = validation.check_non_negative_int("seed", seed)
        self.seed = seed

    def build(self, input_shape):
        channels = self.channels(input_shape)
        self.gamma, self.beta = self.build_affine(channels)
        self.build_moving_statistics(channels)
        shape = (self.num_components, channels)
        self.component_means = self._state("component_means", shape)
        self.component_variances = self._state(
            "component_variances", shape, "ones"
        )
        self.component_noise = self._state(
            "component_noise",
            shape,
            keras.initializers.RandomNormal(0.0, 1.0, seed=self.seed),
        )
        self.components_started = self.add_weight(
            shape=(),
            name="components_started",
            initializer="zeros",
            dtype="int32",
            trainable=False,
            autocast=False,
        )

    def _state(self, name, shape, initializer="zeros"):
        return self.add_weight(
            shape=shape,
            name=name,
            initializer=initializer,
            trainable=False,
            autocast=False,
        )

    def initial_components(self):
        """The components before any test batch, from the moving
        statistics and the noise: `(means, variances)`, `(K, channels)`."""
        k = self.num_components
        spread = 0.0 if k == 1 else self.spread
        mean = ops.convert_to_tensor(self.moving_mean)
        variance = ops.convert_to_tensor(self.moving_variance)
        means = ops.broadcast_to(mean[None], (k, mean.shape[0]))
        if k > 1:
            noise = ops.convert_to_tensor(self.component_noise)
            width = (spread * k / (k - 1)) ** 0.5
            means = means + width * ops.sqrt(variance)[None] * noise
        variances = ops.broadcast_to(
            (1.0 - spread) * variance[None], means.shape
        )
        return means, variances

    def reset(self):
        """Sets the components back to their initial values (from the
        current moving statistics), as before the first test batch."""
        means, variances = self.initial_components()
        self.component_means.assign(means)
        self.component_variances.assign(variances)
        self.components_started.assign(1)

    def call(self, inputs, training=None):
        x = statistics.upcast(inputs)
        axis = self.channel_axis(len(x.shape))
        if self.is_training(training):
            mean, variance, _ = batch_moments(x, axis)
            statistics.moving_average(self.moving_mean, mean, self.momentum)
            statistics.moving_average(
                self.moving_variance, variance, self.momentum
            )
            self.components_started.assign(0)
        elif len(x.shape) == 2:
            mean = ops.cast(self.moving_mean, x.dtype)
            variance = ops.cast(self.moving_variance, x.dtype)
        else:
            return ops.cast(self._unmix(x, axis), self.compute_dtype)
        return self.batch_normalize(x, mean, variance, axis)

    def _components(self, dtype):
        started = ops.convert_to_tensor(self.components_started) > 0
        initial_means, initial_variances = self.initial_components()
        means = ops.where(
            started, ops.convert_to_tensor(self.component_means), initial_means
        )
        variances = ops.where(
            started,
            ops.convert_to_tensor(self.component_variances),
            initial_variances,
        )
        return ops.cast(means, dtype), ops.cast(variances, dtype)

    def _rate(self, x):
        """`1 - adaptation_momentum ** (B / max_batch_size)`."""
        if self.test_batch_size is not None:
            power = self.test_batch_size / self.max_batch_size
            return 1.0 - self.adaptation_momentum**power
        size = ops.cast(ops.shape(x)[0], x.dtype)
        keep = ops.cast(self.adaptation_momentum, x.dtype)
        return 1.0 - ops.power(keep, size / self.max_batch_size)

    def _unmix(self, x, axis):
        fast = statistics.fast_module(FAST_MODULE)
        if fast is not None:
            return fast.unmix_inference(self, x, axis)
        inst_mean, inst_var = instance_moments(x, axis)
        means, variances = self._components(x.dtype)
        means = ops.stop_gradient(means)
        variances = ops.stop_gradient(variances)
        probs = assignment(inst_mean, means, self.temperature)
        mean, variance = mixed_statistics(
            probs, inst_mean, inst_var, means, variances
        )
        self._update(x, probs, inst_mean, inst_var, means, variances)
        shape = statistics.channel_shape(len(x.shape), axis, x.shape[axis])
        shape[0] = -1
        scale = ops.rsqrt(variance + self.epsilon)
        if self.gamma is not None:
            scale = scale * self.read(self.gamma, x.dtype)
        outputs = (x - ops.reshape(mean, shape)) * ops.reshape(scale, shape)
        if self.beta is not None:
            beta = self.read(self.beta, x.dtype)
            outputs = outputs + ops.reshape(beta, shape[1:])
        return outputs

    def _update(self, x, probs, inst_mean, inst_var, means, variances):
        inst_mean = ops.stop_gradient(inst_mean)
        inst_var = ops.stop_gradient(inst_var)
        new_means, new_variances = component_update(
            probs, inst_mean, inst_var, means, variances, self._rate(x)
        )
        finite = ops.logical_and(
            ops.all(ops.isfinite(inst_mean)), ops.all(ops.isfinite(inst_var))
        )
        self.component_means.assign(
            ops.cast(ops.where(finite, new_means, means), "float32")
        )
        self.component_variances.assign(
            ops.cast(ops.where(finite, new_variances, variances), "float32")
        )
        self.components_started.assign(1)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_components": self.num_components,
                "temperature": self.temperature,
                "adaptation_momentum": self.adaptation_momentum,
                "test_batch_size": self.test_batch_size,
                "max_batch_size": self.max_batch_size,
                "spread": self.spread,
                "seed": self.seed,
            }
        )
        return config
