"""Progressive RepBN: LayerNorm annealed into RepBN over training (SLAB)."""

import warnings

from keras import initializers
from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.normalization import backward_state
from keras_batchopt.src.layers.normalization import statistics
from keras_batchopt.src.layers.normalization.rep_batch_normalization import (
    RepBatchNormalizationBase,
)

INFERENCE_MODES = ("rep_bn", "blend")


def layer_norm(rows, gamma, beta, epsilon):
    """LayerNorm over the channels of `(rows, channels)`."""
    mean = ops.mean(rows, axis=-1, keepdims=True)
    variance = ops.mean(ops.square(rows - mean), axis=-1, keepdims=True)
    return (rows - mean) * ops.rsqrt(variance + epsilon) * gamma + beta


def blend_ratio(steps, warmup_steps, total_steps, initial_ratio):
    """The weight of LayerNorm after `steps` optimizer updates: the
    official `lambda = r0 * iter / total_step`, with `iter` counting down
    from `total_steps` once the warmup is over (1 during the warmup,
    where the output is LayerNorm alone)."""
    remaining = ops.clip(total_steps - (steps - warmup_steps), 0, total_steps)
    return initial_ratio * remaining / total_steps


@keras_batchopt_export("keras_batchopt.layers.ProgressiveRepBN")
class ProgressiveRepBN(RepBatchNormalizationBase):
    """Progressive re-parameterized BatchNorm (PRepBN, SLAB's `LinearNorm`).

    Trains as LayerNorm at first and hands over to
    `RepBatchNormalization` (`BN(x) + alpha x`) linearly, so a transformer
    trained with LayerNorm's stability runs with a foldable BatchNorm at
    inference. After `s` optimizer updates:

    ```
    s <  warmup_steps:  y = LN(x)
    s >= warmup_steps:  y = lambda LN(x) + (1 - lambda) RepBN(x)
                        lambda = initial_ratio * max(0, total_steps -
                                 (s - warmup_steps)) / total_steps
    ```

    `lambda` reaches 0 after `warmup_steps + total_steps` updates. The
    counter `steps` advances once per optimizer update, not per forward
    call: evaluation, extra forward passes and the micro-batches of
    `gradient_accumulation_steps` do not move it, and it is saved with the
    model (a new optimizer does not restart the schedule). BN's moving
    statistics update only once the warmup is over, as in the official
    code.

    Training vs inference: training computes both branches and their
    blend, with BN on batch statistics. Inference with
    `inference_mode="rep_bn"` (the official behaviour) is RepBN alone on
    the moving statistics, a per-channel affine (`inference_affine()`)
    that `keras_batchopt.layers.fold_normalization` merges into an
    adjacent `Dense`; if `lambda` has not reached 0, inference differs
    from training and the layer warns once. `inference_mode="blend"`
    evaluates the current blend instead (LN plus RepBN on moving
    statistics), which matches training mid-schedule but cannot be folded
    until `lambda` is 0. Any inference batch size works.

    Args:
        total_steps: optimizer updates over which `lambda` goes from
            `initial_ratio` to 0; the official class default is 300000,
            SLAB's DeiT/Swin/PVT configurations use 60000.
        warmup_steps: updates trained with LayerNorm alone first (the
            official `warm`, default 0).
        initial_ratio: `lambda` when the hand-over starts (`r0`), in
            (0, 1].
        inference_mode: `"rep_bn"` or `"blend"`, see above.
        axis: the channel axis (`-1` channels_last, `1` channels_first).
        layer_norm_epsilon: LayerNorm's epsilon (SLAB: 1e-6).
        momentum: the BN's Keras momentum (0.9 is PyTorch's 0.1).
        epsilon: the BN's epsilon (1e-5).
        layer_norm_gamma_initializer, layer_norm_beta_initializer: the
            LayerNorm affine's initializers.
        alpha_initializer, center, scale, beta_initializer,
        gamma_initializer, moving_mean_initializer,
        moving_variance_initializer, beta_regularizer, gamma_regularizer,
        beta_constraint, gamma_constraint: the RepBN's, as in
            `RepBatchNormalization`.
        synchronized: whether, in training, the batch statistics are
            those of every replica's batch: under a `tf.distribute`
            strategy the moments are all-reduced across the replicas (as
            `keras.layers.BatchNormalization(synchronized=True)` does);
            under `keras.distribution` on JAX a jitted step already
            reduces over the global batch, synchronized or not. Defaults
            to `False`. `True` raises a ValueError on torch (Keras has no
            torch distribution).
        **kwargs: base `Layer` arguments.

    Example:

    >>> import numpy as np
    >>> import keras_batchopt
    >>> layer = keras_batchopt.layers.ProgressiveRepBN(total_steps=100)
    >>> x = np.random.default_rng(0).normal(size=(4, 7, 8)).astype("float32")
    >>> tuple(layer(x, training=True).shape)
    (4, 7, 8)
    >>> float(layer.lambda_value())
    1.0

    References:
        - Guo, Chen, Tang, Wang. "SLAB: Efficient Transformers with
          Simplified Linear Attention and Progressive Re-parameterized
          Batch Normalization." ICML 2024. arXiv:2405.11582.
        - Official code: github.com/xinghaochen/SLAB
          (`classification/models/prepbn.py`, `LinearNorm`).

    Note:
        The official module decrements its counters on every training
        forward call. Here `steps` is set by the backward pass through
        Keras's `overwrite_with_gradient` channel (see
        `PowerNormalization`), so it advances once per optimizer update:
        it is listed among the trainable weights, any Keras optimizer's
        `apply` assigns it, and under `gradient_accumulation_steps` it
        advances once per accumulated update. During the warmup the RepBN
        branch is computed with weight 0, so its parameters get zero
        gradients (the official module computes no branch and leaves them
        without gradients, so PyTorch's optimizers skip them; here weight
        decay and moment decay still reach them). A frozen layer
        (`trainable=False`) does not advance.
        Keras >= 3.10 keeps this state out of loss-scale unscaling and out of
        `use_ema`; keras_batchopt's optimizers keep it out of `use_ema` on
        every Keras (with `use_ema` on TensorFlow, Keras 3.15's own optimizers
        fail on it at the end of `fit`).
    """

    def __init__(
        self,
        total_steps=300000,
        warmup_steps=0,
        initial_ratio=1.0,
        inference_mode="rep_bn",
        axis=-1,
        layer_norm_epsilon=1e-6,
        momentum=0.9,
        epsilon=1e-5,
        layer_norm_gamma_initializer="ones",
        layer_norm_beta_initializer="zeros",
        **kwargs,
    ):
        super().__init__(
            axis=axis, momentum=momentum, epsilon=epsilon, **kwargs
        )
        self.total_steps = validation.check_positive_int(
            "total_steps", total_steps
        )
        self.warmup_steps = validation.check_non_negative_int(
            "warmup_steps", warmup_steps
        )
        self.initial_ratio = validation.check_in_interval(
            "initial_ratio", initial_ratio, 0.0, 1.0, False, True
        )
        self.inference_mode = validation.check_one_of(
            "inference_mode", inference_mode, INFERENCE_MODES
        )
        self.layer_norm_epsilon = validation.check_positive(
            "layer_norm_epsilon", layer_norm_epsilon
        )
        self.layer_norm_gamma_initializer = initializers.get(
            layer_norm_gamma_initializer
        )
        self.layer_norm_beta_initializer = initializers.get(
            layer_norm_beta_initializer
        )
        self._warned = False

    def build(self, input_shape):
        channels = self.channels(input_shape)
        self.layer_norm_gamma = self.add_weight(
            shape=(channels,),
            name="layer_norm_gamma",
            initializer=self.layer_norm_gamma_initializer,
            autocast=False,
        )
        self.layer_norm_beta = self.add_weight(
            shape=(channels,),
            name="layer_norm_beta",
            initializer=self.layer_norm_beta_initializer,
            autocast=False,
        )
        self.build_rep_bn(channels)
        self.steps = backward_state.add_backward_state(self, "steps", ())
        backward_state.check_loss_scaling(self)

    def _ratio(self, steps):
        return blend_ratio(
            steps, self.warmup_steps, self.total_steps, self.initial_ratio
        )

    def lambda_value(self):
        """The current weight of LayerNorm, as a float (1.0 before and
        during the warmup)."""
        return self._float_ratio(backward_state.concrete_value(self.steps))

    def _float_ratio(self, steps):
        remaining = self.total_steps - (float(steps) - self.warmup_steps)
        remaining = min(max(remaining, 0.0), self.total_steps)
        return self.initial_ratio * remaining / self.total_steps

    def _zero_tie(self, dtype):
        """0, with a zero gradient for LayerNorm's weights (Keras warns
        about weights without gradients)."""
        ties = ops.sum(self.layer_norm_gamma) + ops.sum(self.layer_norm_beta)
        return ops.cast(ties, dtype) * 0.0

    def _layer_norm(self, rows):
        dtype = rows.dtype
        return layer_norm(
            rows,
            ops.cast(self.layer_norm_gamma, dtype),
            ops.cast(self.layer_norm_beta, dtype),
            self.layer_norm_epsilon,
        )

    def call(self, inputs, training=None, mask=None):
        x = statistics.upcast(inputs)
        rows, back = statistics.to_rows(x, self.channel_axis(len(x.shape)))
        dtype = rows.dtype
        steps = ops.stop_gradient(ops.cast(self.steps, dtype))
        ratio = self._ratio(steps)
        if self.is_training(training):
            active = steps >= self.warmup_steps
            weights = statistics.row_weights(mask, rows)
            rep = self.rep_bn_training(rows, weights, update=active)
            ratio = ops.where(active, ratio, 1.0)
            # Once lambda is 0, LayerNorm's branch is skipped; its weights
            # keep their (zero) gradients through a zero term.
            y = ops.cond(
                ratio > 0,
                lambda: ratio * self._layer_norm(rows) + (1.0 - ratio) * rep,
                lambda: rep + self._zero_tie(dtype),
            )
            y = backward_state.count_updates(y, self.steps)
        elif self.inference_mode == "rep_bn":
            self._warn_if_unfinished()
            y = self.rep_bn_inference(rows)
        else:
            ratio = ops.where(steps >= self.warmup_steps, ratio, 1.0)
            y = ratio * self._layer_norm(rows) + (
                1.0 - ratio
            ) * self.rep_bn_inference(rows)
        return ops.cast(back(y), inputs.dtype)

    def _warn_if_unfinished(self):
        if self._warned:
            return
        steps = backward_state.concrete_value(self.steps)
        if steps is None:
            # Traced by a JAX trainer (compiled `predict`, `evaluate`):
            # the check runs with the value when the computation does.
            backward_state.call_on_host(self._warn_for_steps, self.steps)
        else:
            self._warn_for_steps(steps)

    def _warn_for_steps(self, steps):
        if self._warned or steps <= 0:
            return
        ratio = self._float_ratio(steps)
        if ratio > 0:
            self._warned = True
            warnings.warn(
                f"{self.name}: inference uses RepBN alone while training is "
                f"at lambda={ratio:.4g} (LayerNorm's weight); it reaches 0 "
                f"after {self.warmup_steps + self.total_steps} optimizer "
                f"updates and {int(steps)} were made. Train on, or pass "
                "`inference_mode='blend'`.",
                stacklevel=3,
            )

    def unfinished(self):
        """Whether `lambda` is still above 0."""
        return self.lambda_value() > 0

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps,
                "initial_ratio": self.initial_ratio,
                "inference_mode": self.inference_mode,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "layer_norm_gamma_initializer": initializers.serialize(
                    self.layer_norm_gamma_initializer
                ),
                "layer_norm_beta_initializer": initializers.serialize(
                    self.layer_norm_beta_initializer
                ),
            }
        )
        return config
