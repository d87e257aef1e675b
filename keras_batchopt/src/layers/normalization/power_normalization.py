"""PowerNorm: quadratic-mean batch statistics with an approximate backward."""

from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.normalization import backward_state
from keras_batchopt.src.layers.normalization import statistics
from keras_batchopt.src.layers.normalization.quadratic_mean import (
    QuadraticMeanNormalization,
)


def group_scaling(rows, groups, epsilon):
    """Divides each token's group of channels by its root mean square
    (official `GroupScaling1D`); differentiated by autodiff."""
    channels = rows.shape[-1]
    grouped = ops.reshape(rows, (-1, groups, channels // groups))
    moment = ops.mean(ops.square(grouped), axis=-1, keepdims=True)
    return ops.reshape(grouped * ops.rsqrt(moment + epsilon), (-1, channels))


def _row_count(x):
    return ops.cast(ops.shape(x)[0], x.dtype)


def _power_forward(x, gamma, beta, gradient_ema, variance, inverse, square):
    # y = gamma * z + beta with z = x * inverse, in one multiply-add; the
    # backward recomputes what it needs from x (fewer full-size arrays).
    y = x * (gamma * inverse) + beta
    return y, (x, gamma, gradient_ema, variance, inverse, square)


def power_backward(alpha_backward, epsilon, synchronized=False):
    """The official approximate backward: with `g = dy * gamma`,
    `g~ = g - (1 - alpha_backward) * ema * z`, `dx = g~ / sqrt(var + eps)`
    with the *batch* variance, and the gradient EMA grows by `mean(g~ z)`
    over every row (padding included).

    Computed per channel from `sum(dy * x)` and `mean(x**2)` over all rows,
    so that the only full-size arrays are `dy * x` and `dx`. With
    `synchronized`, that mean is over every replica's rows: `sum(dy * x)`
    and the row count are summed across the replicas (`square` and
    `variance` come synchronized from the forward pass); `dgamma` and
    `dbeta` stay this replica's sums, which the optimizer sums.
    """
    decay = 1.0 - alpha_backward

    def backward(residuals, dy):
        x, gamma, gradient_ema, variance, inverse, square = residuals
        dy_x = ops.sum(dy * x, 0)
        total_dy_x, rows = statistics.all_reduce_sum(
            [dy_x, _row_count(x)], synchronized
        )
        # mean(g~ z) = gamma mean(dy z) - decay ema mean(z**2)
        new_ema = gradient_ema + (
            gamma * (total_dy_x * inverse) / rows
            - decay * gradient_ema * ops.square(inverse) * square
        )
        batch_inverse = ops.rsqrt(variance + epsilon)
        dx = dy * (gamma * batch_inverse) - x * (
            decay * gradient_ema * inverse * batch_inverse
        )
        return dx, dy_x * inverse, ops.sum(dy, 0), new_ema, None, None, None

    return backward


@keras_batchopt_export("keras_batchopt.layers.PowerNormalization")
class PowerNormalization(QuadraticMeanNormalization):
    """Power normalization for transformers (Shen et al., 2020).

    Batch normalization without centering, made stable for token
    sequences. Each token's channels are first divided, per group, by their
    root mean square (`groups`, the number of attention heads in the
    paper's models). Then, per channel, with the quadratic mean
    `psi_B = mean(x**2)` over the real tokens of the batch (no mean is
    subtracted):

    ```
    training, step t <= warmup_steps:  z = x / sqrt(psi_B + epsilon)
    training, step t >  warmup_steps:  z = x / sqrt(psi + epsilon)
    inference:                         z = x / sqrt(psi + epsilon)
    y = gamma * z + beta
    ```

    The running quadratic mean `psi` (`moving_variance`, initially 1)
    takes, while `t < warmup_steps`, the cumulative average
    `psi <- psi (t - 1) / t + psi_B / t`, then always the moving average
    `psi <- alpha_forward psi + (1 - alpha_forward) psi_B`. The backward
    pass is the official approximation, which replaces the exact gradient
    through the batch statistic by a running gradient statistic `Gamma`
    (`gradient_ema`, initially 0):

    ```
    g = dy * gamma
    g~ = g - (1 - alpha_backward) * Gamma * z
    dx = g~ / sqrt(psi_B + epsilon)
    Gamma <- Gamma + mean(g~ * z)
    ```

    Training vs inference: in training (`training=True` and the layer
    trainable) the step counter `iterations` advances by one per call,
    `moving_variance` updates in the forward pass and `gradient_ema` in the
    backward pass; inference uses `moving_variance` and changes nothing.
    Any inference batch size works (nothing depends on the batch there).

    Args:
        axis: the channel axis (`-1`, channels_last; `1` for
            `(batch, channels, tokens)`).
        alpha_forward: weight of the old value in the running quadratic
            mean, in [0, 1). Official default 0.9.
        alpha_backward: the backward's `alpha`; the gradient statistic is
            subtracted with weight `1 - alpha_backward`. In [0, 1).
        warmup_steps: training calls that normalize by the batch statistic
            before the running one takes over. Official default 10000 (the
            paper's scripts pass the learning-rate warmup).
        groups: channel groups of the group scaling; must divide the
            channels.
        epsilon: added to the quadratic means.
        group_epsilon: added inside the group scaling.
        center, scale, beta_initializer, gamma_initializer,
        beta_regularizer, gamma_regularizer, beta_constraint,
        gamma_constraint: as in `keras.layers.BatchNormalization`.
        moving_variance_initializer: initializer of `psi`.
        synchronized: whether, in training, the statistics over the batch
            are those of every replica's batch: under a `tf.distribute`
            strategy `psi_B` (and the backward's `mean(x**2)` over every
            token) is all-reduced across the replicas in the forward pass,
            and so are the sums of the backward's `mean(g~ * z)`, so that
            every replica sets the same `gradient_ema`; under
            `keras.distribution` on JAX a jitted step already reduces over
            the global batch, synchronized or not. Defaults to `False`.
            `True` raises a ValueError on torch (Keras has no torch
            distribution).
        **kwargs: base `Layer` arguments.

    Masking: a Keras mask (True for real tokens) keeps padding out of
    `psi_B` and `psi`, as the official `pad_mask` does; outputs at padded
    positions are computed all the same, and the backward's gradient
    statistic averages over every position, as in the official code.

    Example:

    >>> import numpy as np
    >>> import keras, keras_batchopt
    >>> layer = keras_batchopt.layers.PowerNormalization(warmup_steps=10)
    >>> x = np.random.default_rng(0).normal(size=(4, 7, 8)).astype("float32")
    >>> tuple(layer(x, training=True).shape)
    (4, 7, 8)

    References:
        - Shen, Yao, Gholami, Mahoney, Keutzer. "PowerNorm: Rethinking Batch
          Normalization in Transformers." ICML 2020. arXiv:2003.07845.
        - Official code: github.com/sIncerass/powernorm
          (`fairseq/modules/norms/mask_powernorm.py`).

    Note:
        This follows the official code, not the paper's Algorithm 1 (which
        normalizes by `psi` from the first step and updates `Gamma` with a
        decay): the warmup on batch statistics, the two running updates in
        sequence during warmup, the backward's batch variance after warmup
        and the undecayed `Gamma` are the official code's. The backward
        state reaches `gradient_ema` through Keras's
        `overwrite_with_gradient` channel: `gradient_ema` is listed among
        the trainable weights and any Keras optimizer's `apply` assigns it
        (never a descent step); under `gradient_accumulation_steps` Keras
        merges the micro-batches' values by an element-wise maximum. Like
        the official code under fp16 loss scaling, `Gamma` accumulates
        loss-scaled gradients under `mixed_float16`. Call the layer once
        per training step. The official code has no `synchronized`: ours
        reduces over every replica's tokens as one replica with the whole
        batch would.
        Keras >= 3.10 keeps this state out of loss-scale unscaling and out of
        `use_ema`; keras_batchopt's optimizers keep it out of `use_ema` on every
        Keras (with `use_ema` on TensorFlow, Keras 3.15's own optimizers fail on
        it at the end of `fit`).
    """

    def __init__(
        self,
        axis=-1,
        alpha_forward=0.9,
        alpha_backward=0.9,
        warmup_steps=10000,
        groups=1,
        epsilon=1e-5,
        group_epsilon=1e-5,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        beta_constraint=None,
        gamma_constraint=None,
        **kwargs,
    ):
        alpha_forward = validation.check_beta("alpha_forward", alpha_forward)
        super().__init__(
            axis=axis,
            momentum=alpha_forward,
            epsilon=epsilon,
            center=center,
            scale=scale,
            beta_initializer=beta_initializer,
            gamma_initializer=gamma_initializer,
            moving_variance_initializer=moving_variance_initializer,
            beta_regularizer=beta_regularizer,
            gamma_regularizer=gamma_regularizer,
            beta_constraint=beta_constraint,
            gamma_constraint=gamma_constraint,
            **kwargs,
        )
        self.alpha_forward = alpha_forward
        self.alpha_backward = validation.check_beta(
            "alpha_backward", alpha_backward
        )
        self.warmup_steps = validation.check_non_negative_int(
            "warmup_steps", warmup_steps
        )
        self.groups = validation.check_positive_int("groups", groups)
        self.group_epsilon = validation.check_positive(
            "group_epsilon", group_epsilon
        )
        self.supports_masking = True

    def build(self, input_shape):
        channels = self.channels(input_shape)
        if channels % self.groups:
            validation.fail(
                "groups",
                f"a divisor of the {channels} input channels",
                self.groups,
            )
        self.build_statistics(channels)
        self.gradient_ema = backward_state.add_backward_state(
            self, "gradient_ema", (channels,)
        )
        backward_state.check_loss_scaling(self)

    def call(self, inputs, training=None, mask=None):
        x = statistics.upcast(inputs)
        rows, back = statistics.to_rows(x, self.channel_axis(len(x.shape)))
        rows = group_scaling(rows, self.groups, self.group_epsilon)
        psi = ops.cast(self.moving_variance, rows.dtype)
        if not self.is_training(training):
            return ops.cast(back(self.inference(rows)), inputs.dtype)
        step = self.next_step()
        t = ops.cast(step, rows.dtype)
        weights = statistics.row_weights(mask, rows)
        square = ops.square(ops.stop_gradient(rows))
        # psi_B over the real tokens, and the backward's mean(x**2) over
        # every token, of every replica when synchronized.
        variance = statistics.synchronized_channel_mean(
            square, weights, self.synchronized
        )
        if weights is None:
            square = variance
        else:
            square = statistics.synchronized_channel_mean(
                square, None, self.synchronized
            )
        warm = t <= self.warmup_steps
        inverse = ops.rsqrt(ops.where(warm, variance, psi) + self.epsilon)
        gamma, beta = self.affine_inputs(variance)
        backward = power_backward(
            self.alpha_backward, self.epsilon, self.synchronized
        )
        y = backward_state.custom_vjp(_power_forward, backward)(
            rows,
            gamma,
            beta,
            ops.cast(self.gradient_ema, rows.dtype),
            variance,
            inverse,
            square,
        )
        cumulative = psi * (t - 1.0) / t + variance / t
        psi = ops.where(t < self.warmup_steps, cumulative, psi)
        psi = self.alpha_forward * psi + (1.0 - self.alpha_forward) * variance
        self.moving_variance.assign(ops.cast(psi, "float32"))
        return ops.cast(back(y), inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.pop("momentum")
        config.update(
            {
                "alpha_forward": self.alpha_forward,
                "alpha_backward": self.alpha_backward,
                "warmup_steps": self.warmup_steps,
                "groups": self.groups,
                "group_epsilon": self.group_epsilon,
            }
        )
        return config
