"""Unified Normalization: smoothed, outlier-filtered batch statistics."""

from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.normalization import backward_state
from keras_batchopt.src.layers.normalization import statistics
from keras_batchopt.src.layers.normalization.quadratic_mean import (
    QuadraticMeanNormalization,
)


def _window_sizes(window_size):
    if isinstance(window_size, (list, tuple)):
        if len(window_size) != 2:
            validation.fail(
                "window_size",
                "an int >= 1 or a pair (forward, backward) of ints >= 1",
                window_size,
            )
        sizes = tuple(window_size)
    else:
        sizes = (window_size, window_size)
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            validation.fail(
                "window_size",
                "an int >= 1 or a pair (forward, backward) of ints >= 1",
                window_size,
            )
    return sizes


def _window_slot(size, step):
    """A `(size, 1)` mask of the window row that step `step` writes."""
    return ops.expand_dims(ops.arange(size) == step % size, -1)


def geometric_mean(window):
    """Per-channel geometric mean over the window (0 where an entry is 0,
    as the official `exp(mean(log))`)."""
    return ops.exp(ops.mean(ops.log(window), axis=0))


def unbiased_variance(values):
    """The unbiased variance of all entries (NaN for one entry, as
    `torch.var`)."""
    flat = ops.reshape(values, (-1,))
    count = ops.cast(ops.shape(flat)[0], flat.dtype)
    centered = flat - ops.mean(flat)
    return ops.sum(ops.square(centered)) / (count - 1.0)


def _unified_forward(x, gamma, beta, window, ema, variance, ratio, *flags):
    # y = gamma * z + beta with z = x / sqrt(variance), in one multiply-add;
    # the backward recomputes what it needs from x.
    inverse = ops.rsqrt(variance)
    y = x * (gamma * inverse) + beta
    return y, (x, gamma, window, ema, inverse, ratio, flags)


def unified_backward(momentum, synchronized=False):
    """The official backward: `g = dy * gamma * r`, the gradient statistic
    `mean(g z)` goes into the backward window (the EMA instead on a
    skipped batch), and `dx = (g - ema * z) / sqrt(var + eps)` with the
    updated EMA (`g - mean_gz * z` on a skipped batch); `dgamma` takes
    `r * z`. Per-channel terms come from `sum(dy * x)`, so the only
    full-size arrays are `dy * x` and `dx`. With `synchronized`, `mean(g
    z)` is over every replica's rows (`sum(dy * x)` and the row count
    summed across the replicas), and so is what depends on it: `dx`, the
    window and the EMA; `dgamma` and `dbeta` stay this replica's sums,
    which the optimizer sums."""

    def backward(residuals, dy):
        x, gamma, window, ema, inverse, ratio, flags = residuals
        skip, instant, slot = flags
        dy_x = ops.sum(dy * x, 0)
        total_dy_x, rows = statistics.all_reduce_sum(
            [dy_x, ops.cast(ops.shape(x)[0], x.dtype)], synchronized
        )
        gz = gamma * ratio * (total_dy_x * inverse) / rows
        window = ops.where(slot > 0, ops.where(skip > 0, ema, gz), window)
        mean_gz = ops.where(instant > 0, gz, ops.mean(window, axis=0))
        new_ema = ema * momentum + (1.0 - momentum) * mean_gz
        subtracted = ops.where(skip > 0, mean_gz, new_ema)
        dx = dy * (gamma * ratio * inverse) - x * (
            subtracted * ops.square(inverse)
        )
        d_gamma = ratio * (dy_x * inverse)
        d_beta = ops.sum(dy, 0)
        return (dx, d_gamma, d_beta, window, new_ema) + (None,) * 5

    return backward


@keras_batchopt_export("keras_batchopt.layers.UnifiedNormalization")
class UnifiedNormalization(QuadraticMeanNormalization):
    """Unified Normalization for transformers (Yang et al., 2022).

    A batch normalization of token sequences, without centering, that
    smooths its statistics over a window of recent batches and can filter
    outlier batches, so that it replaces LayerNorm and folds into a
    per-channel affine at inference. Per channel, with
    `x2 = mean(x**2)` over the real tokens of the batch at step `t`:

    ```
    window  <- x2 written into slot t mod W_f (the last W_f batches)
    outlier =  filtration and t >= warmup and any channel has
               AM(window) - GM(window) > W_f * Var(sqrt(old window))
    var     =  x2                  if t <= W_f or t < warmup or outlier
               GM(window)          otherwise (geometric mean)
    r       =  clip(sqrt(var + eps) / sqrt(moving_variance + eps), 1/5, 5)
               once t > max(1000, warmup) and not outlier; else 1
    y       =  gamma * x / sqrt(var + eps) + beta
    moving_variance <- momentum * moving_variance + (1 - momentum) * var
    ```

    An outlier batch is normalized by its own statistic and its window
    slot holds `moving_variance` instead. The backward pass is the
    official approximation, with the gradient statistic smoothed over a
    window of `W_b` steps and an EMA:

    ```
    g = dy * gamma * r;  gz = mean(g * z)  ->  slot t mod W_b
    mean_gz = gz if t <= W_b or t < warmup or outlier, else mean(window)
    ema <- momentum * ema + (1 - momentum) * mean_gz
    dx = (g - ema * z) / sqrt(var + eps)     (mean_gz on an outlier)
    dgamma = sum(dy * r * z)
    ```

    Training vs inference: in training (`training=True` and the layer
    trainable) `iterations` advances by one per call, the forward window,
    `moving_variance` and `skip_count` update in the forward pass, the
    backward window and `gradient_ema` in the backward pass. Inference
    computes `gamma * x / sqrt(moving_variance + eps) + beta`, a
    per-channel affine (`inference_affine()`) that
    `keras_batchopt.layers.fold_normalization` merges into an adjacent
    `Dense`. Any inference batch size works.

    Args:
        axis: the channel axis (`-1` channels_last, `1` for
            `(batch, channels, tokens)`).
        window_size: `W_f = W_b`, or a pair `(W_f, W_b)`; ints >= 1.
            `W_f = 1` treats every batch as an outlier (official).
        warmup_steps: training calls that use the batch statistic alone.
            Official default 4000.
        outlier_filtration: the adaptive filtration (official advice: off
            for NLP, on for vision).
        momentum: weight of the old value in `moving_variance` and
            `gradient_ema`, in [0, 1).
        epsilon: added to the variances.
        center, scale, beta_initializer, gamma_initializer,
        beta_regularizer, gamma_regularizer, beta_constraint,
        gamma_constraint, moving_variance_initializer: as in
            `keras.layers.BatchNormalization`.
        synchronized: whether, in training, the statistics over the batch
            are those of every replica's batch: under a `tf.distribute`
            strategy `x2` is all-reduced across the replicas in the
            forward pass (so the windows, `moving_variance` and the
            outlier test are the same on every replica), and so are the
            sums of the backward's `mean(g z)` (so `dx`, `gradient_window`
            and `gradient_ema` are those of the whole batch); under
            `keras.distribution` on JAX a jitted step already reduces over
            the global batch, synchronized or not. Defaults to `False`.
            `True` raises a ValueError on torch (Keras has no torch
            distribution).
        **kwargs: base `Layer` arguments.

    Masking: a Keras mask (True for real tokens) keeps padding out of
    `x2`, as the official `pad_mask`; the backward's statistics average
    over every position, as in the official code.

    Example:

    >>> import numpy as np
    >>> import keras_batchopt
    >>> layer = keras_batchopt.layers.UnifiedNormalization(warmup_steps=8)
    >>> x = np.random.default_rng(0).normal(size=(4, 7, 8)).astype("float32")
    >>> tuple(layer(x, training=True).shape)
    (4, 7, 8)

    References:
        - Yang, Chen, Yu, Ye, Shen, Pu, Zhang, Pan. "Unified Normalization
          for Accelerating and Stabilizing Transformers." ACM MM 2022.
          arXiv:2208.01313.
        - Official code: github.com/hikvision-research/Unified-Normalization
          (`fairseq/modules/unified_normalization/`, `UN1d`).

    Note:
        The official code's choices are kept: the outlier threshold uses
        the window's variance before the new batch is written, `r` is 1
        for the first `max(1000, warmup)` steps, and `dgamma` uses `r * z`
        although the forward used `z`. The backward state (`gradient_ema`
        and `gradient_window`) reaches its variables through Keras's
        `overwrite_with_gradient` channel: they are listed among the
        trainable weights, and any Keras optimizer's `apply` assigns them
        (never a descent step); with `gradient_accumulation_steps` Keras
        merges the micro-batches' values by an element-wise maximum. Call
        the layer once per training step. The official code has no
        `synchronized`: ours reduces over every replica's tokens as one
        replica with the whole batch would. Keras >= 3.10 keeps this state
        out of loss-scale unscaling and out of `use_ema`; keras_batchopt's
        optimizers keep it out of `use_ema` on every Keras (with `use_ema`
        on TensorFlow, Keras 3.15's own optimizers fail on it at the end of
        `fit`).
    """

    def __init__(
        self,
        axis=-1,
        window_size=4,
        warmup_steps=4000,
        outlier_filtration=False,
        momentum=0.9,
        epsilon=1e-5,
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
        super().__init__(
            axis=axis,
            momentum=momentum,
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
        self.window_size = _window_sizes(window_size)
        self.warmup_steps = validation.check_non_negative_int(
            "warmup_steps", warmup_steps
        )
        self.outlier_filtration = validation.check_bool(
            "outlier_filtration", outlier_filtration
        )
        self.supports_masking = True

    def build(self, input_shape):
        channels = self.channels(input_shape)
        forward_size, backward_size = self.window_size
        self.build_statistics(channels)
        self.variance_window = self.add_weight(
            shape=(forward_size, channels),
            name="variance_window",
            initializer="zeros",
            trainable=False,
            autocast=False,
        )
        self.gradient_window = backward_state.add_backward_state(
            self, "gradient_window", (backward_size, channels)
        )
        self.gradient_ema = backward_state.add_backward_state(
            self, "gradient_ema", (channels,)
        )
        self.skip_count = self.add_counter("skip_count")
        backward_state.check_loss_scaling(self)

    def inference_affine(self):
        """`(scale, shift)`, NumPy float32 arrays of shape `(channels,)`
        with inference output `x * scale + shift`."""
        scale, shift = self._affine("float32")
        scale = ops.convert_to_numpy(scale)
        if shift is None:
            return scale, scale * 0
        return scale, ops.convert_to_numpy(shift)

    def call(self, inputs, training=None, mask=None):
        x = statistics.upcast(inputs)
        rows, back = statistics.to_rows(x, self.channel_axis(len(x.shape)))
        dtype = rows.dtype
        running = ops.cast(self.moving_variance, dtype)
        if not self.is_training(training):
            return ops.cast(back(self.inference(rows)), inputs.dtype)
        forward_size, backward_size = self.window_size
        step = self.next_step()
        t = ops.cast(step, dtype)
        weights = statistics.row_weights(mask, rows)
        x2 = statistics.synchronized_channel_mean(
            ops.square(ops.stop_gradient(rows)), weights, self.synchronized
        )
        window = ops.cast(self.variance_window, dtype)
        recorded = unbiased_variance(ops.sqrt(window))
        slot = _window_slot(forward_size, step)
        window = ops.where(slot, x2, window)
        # The window's geometric mean with this batch written in: the
        # outlier test's, and the variance unless the batch is an outlier
        # (then x2 is used and the overwritten window's mean is not needed).
        smoothed = geometric_mean(window)
        skip = ops.convert_to_tensor(forward_size == 1)
        if self.outlier_filtration:
            spread = ops.mean(window, axis=0) - smoothed
            outlier = ops.logical_and(
                t >= self.warmup_steps,
                ops.any(spread > recorded * forward_size),
            )
            window = ops.where(ops.logical_and(slot, outlier), running, window)
            self.skip_count.assign(self.skip_count + ops.cast(outlier, "int32"))
            skip = ops.logical_or(skip, outlier)
        self.variance_window.assign(ops.cast(window, "float32"))
        instant = ops.logical_or(
            ops.logical_or(t <= forward_size, t < self.warmup_steps), skip
        )
        variance = ops.where(instant, x2, smoothed)
        ratio = ops.sqrt(variance + self.epsilon) * ops.rsqrt(
            running + self.epsilon
        )
        clamped = ops.logical_and(
            t > max(1000, self.warmup_steps), ops.logical_not(skip)
        )
        ratio = ops.where(clamped, ops.clip(ratio, 0.2, 5.0), 1.0)
        backward_instant = ops.logical_or(
            ops.logical_or(t <= backward_size, t < self.warmup_steps), skip
        )
        backward_slot = _window_slot(backward_size, step)
        gamma, beta = self.affine_inputs(variance)
        backward = unified_backward(self.momentum, self.synchronized)
        y = backward_state.custom_vjp(_unified_forward, backward)(
            rows,
            gamma,
            beta,
            ops.cast(self.gradient_window, dtype),
            ops.cast(self.gradient_ema, dtype),
            variance + self.epsilon,
            ratio,
            ops.cast(skip, dtype),
            ops.cast(backward_instant, dtype),
            ops.cast(backward_slot, dtype),
        )
        running = self.momentum * running + (1.0 - self.momentum) * variance
        self.moving_variance.assign(ops.cast(running, "float32"))
        return ops.cast(back(y), inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "window_size": list(self.window_size),
                "warmup_steps": self.warmup_steps,
                "outlier_filtration": self.outlier_filtration,
            }
        )
        return config
