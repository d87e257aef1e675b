from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.ops.trust_ratio import l2_norm
from keras_batchopt.src.ops.trust_ratio import larc_clip
from keras_batchopt.src.ops.trust_ratio import trust_ratio
from keras_batchopt.src.ops.xla_hints import optimization_barrier
from keras_batchopt.src.optimizers import layer_adaptation
from keras_batchopt.src.optimizers.batch_optimizer import BatchOptimizer

TRUST_MODES = ("norm_of_sum", "sum_of_norms")


def rank_at_most_one(variable):
    """Lars's default exclusion rule: scalars, biases and norm scales."""
    return len(variable.shape) <= 1


@keras_batchopt_export("keras_batchopt.optimizers.Lars")
class Lars(BatchOptimizer):
    """LARS: layer-wise adaptive rate scaling (You, Gitman and Ginsburg).

    SGD with momentum where each variable's step is scaled by a trust
    ratio, the ratio of the variable's norm to its gradient's. This is the
    form used to train ResNet-50 at batch sizes of 32K; the defaults follow
    the SimCLR reference implementation and `optax.lars`: weight decay is
    added to the gradient, the ratio is taken on that sum, and the learning
    rate is applied inside the momentum buffer ("classic" momentum).

    Update rule for a variable `w` with gradient `g`:

    ```
    d = g + weight_decay * w
    r = trust_coefficient * ||w|| / (||d|| + epsilon)     # "norm_of_sum"
    r = trust_coefficient * ||w||
        / (||g|| + weight_decay * ||w|| + epsilon)        # "sum_of_norms"
    r = 1 if ||w|| == 0 or the norm in the denominator is 0
    r = min(r / learning_rate, 1)                         # if larc=True
    buf = momentum * buf + learning_rate * r * d
    w = w - buf                                           # nesterov=False
    w = w - (momentum * buf + learning_rate * r * d)      # nesterov=True
    ```

    Variables excluded from weight decay use `d = g`; variables excluded
    from layer adaptation take `r = 1` (a plain momentum step).

    Args:
        learning_rate: a float >= 0, a
            `keras.optimizers.schedules.LearningRateSchedule`, or a callable
            with no arguments. Defaults to `1.0` (timm). The trust
            coefficient makes steps about `1e-3 * learning_rate * ||w||`;
            SimCLR uses `0.3 * batch_size / 256` with warmup and cosine
            decay.
        momentum: a float in [0, 1). Defaults to `0.9`. With `0` no buffer
            is kept.
        nesterov: whether to take Nesterov's look-ahead step. Defaults to
            `False`.
        weight_decay: a float >= 0, added to the gradient before the trust
            ratio. Defaults to `0.0`. Exclude variables with
            `exclude_from_weight_decay()`.
        trust_coefficient: `eta`, a float > 0. Defaults to `0.001`.
        epsilon: a float >= 0 added to the ratio's denominator. Defaults to
            `0.0` (SimCLR, optax; timm uses `1e-8`).
        trust_mode: `"norm_of_sum"` (default; SimCLR, optax): the norm of
            `g + weight_decay * w`; or `"sum_of_norms"` (the paper, timm):
            `||g|| + weight_decay * ||w||`. The two agree when
            `weight_decay` is 0.
        exclude_from_layer_adaptation: which variables take `r = 1`:
            `None` (default) excludes every variable of rank <= 1 (biases,
            normalization scales and offsets), as SimCLR's exclusion of
            batch-norm and bias variables does in practice; a list of
            regular expressions is searched in each variable's path
            (`variable.path`, such as `"sequential/dense/bias"`; a model
            reloaded with `load_model` drops the outer model's name, so
            name layers or variables, not the model) and
            *replaces* the rank rule (`[]` adapts every variable, as
            `optax.lars` does); a callable takes a `keras.Variable` and
            returns True to exclude it (register it with
            `keras.saving.register_keras_serializable` to save the
            optimizer).
        larc: whether to clip the ratio as LARC does,
            `min(r / learning_rate, 1)`, so that no variable steps faster
            than the global learning rate. Defaults to `False`.
        **kwargs: the base optimizer arguments (`name`, `clipnorm`,
            `clipvalue`, `global_clipnorm`, `use_ema`, `ema_momentum`,
            `ema_overwrite_frequency`, `loss_scale_factor`,
            `gradient_accumulation_steps`).

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(
    ...     optimizer=keras_batchopt.optimizers.Lars(
    ...         learning_rate=0.5, weight_decay=1e-4
    ...     ),
    ...     loss="mse",
    ... )
    >>> x, y = np.ones((8, 4)), np.zeros((8, 1))
    >>> history = model.fit(x, y, epochs=2, verbose=0)

    References:
        - [You, Gitman and Ginsburg, 2017](https://arxiv.org/abs/1708.03888),
          Large Batch Training of Convolutional Networks.
        - SimCLR's `lars_optimizer.py` (google-research/simclr), whose
          defaults this class follows, and `optax.lars`.
        - NVIDIA apex `LARC` for the clipped ratio.

    Note:
        - **Learning rate inside the momentum buffer.** The buffer
          accumulates `learning_rate * r * d` (SimCLR, optax, the paper).
          PyTorch-style ports (timm, pytorch_optimizer) keep the learning
          rate outside the buffer; the two agree while the learning rate is
          constant and differ under a schedule. The first step is the same
          in both (`buf` starts at zero here, at the first gradient there).
        - **Exclusions.** `optax.lars` adapts and decays every variable
          unless masked; timm adapts only when `weight_decay != 0` (or
          `always_adapt=True`); pytorch_optimizer adapts rank >= 2
          variables only. The default here is the rank rule.
        - **Norms** are computed in float32 whatever the variable's dtype.
        - **Speed.** On the torch backend a compiled in-place kernel runs per
          large variable (norms and update in one call) and small variables
          are updated together by multi-tensor operations. On TensorFlow the
          generic update runs as graph kernels, which beat an XLA-compiled
          update for this optimizer on CPU.
    """

    # No TensorFlow XLA update: TF's own graph kernels run this step faster
    # on CPU, since XLA's CPU reductions are slow and LARS has few
    # element-wise operations to fuse.
    _fast_path_modules = {
        "torch": "optimizers.torch_lars",
    }
    _decay_in_update_step = True

    # How `scale_learning_rate(rule="auto")` scales it with the batch.
    batch_scaling_rule = "linear"

    def __init__(
        self,
        learning_rate=1.0,
        momentum=0.9,
        nesterov=False,
        weight_decay=0.0,
        trust_coefficient=0.001,
        epsilon=0.0,
        trust_mode="norm_of_sum",
        exclude_from_layer_adaptation=None,
        larc=False,
        name=None,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            name=name,
            **kwargs,
        )
        self.momentum = validation.check_beta("momentum", momentum)
        self.nesterov = validation.check_bool("nesterov", nesterov)
        self.trust_coefficient = validation.check_positive(
            "trust_coefficient", trust_coefficient
        )
        self.epsilon = validation.check_non_negative("epsilon", epsilon)
        self.trust_mode = validation.check_one_of(
            "trust_mode", trust_mode, TRUST_MODES
        )
        self.exclude_from_layer_adaptation = layer_adaptation.from_argument(
            exclude_from_layer_adaptation
        )
        self.larc = validation.check_bool("larc", larc)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums = []
        if self.momentum:
            for variable in var_list:
                self._momentums.append(
                    self.add_variable_from_reference(variable, "momentum")
                )
        # Static per-variable configuration, fixed at build time.
        self._adapts = layer_adaptation.adapt_flags(
            self.exclude_from_layer_adaptation,
            var_list,
            default_rule=rank_at_most_one,
        )

    def _ratio(self, variable, gradient, decayed_gradient, weight_decay, lr):
        """The trust ratio, in float32 (also used by the torch kernel)."""
        param_norm = l2_norm(variable)
        if self.trust_mode == "norm_of_sum":
            update_norm = l2_norm(decayed_gradient)
            denominator = update_norm
        else:
            update_norm = l2_norm(gradient)
            denominator = update_norm + weight_decay * param_norm
        ratio = trust_ratio(
            param_norm,
            update_norm,
            denominator,
            coefficient=self.trust_coefficient,
            epsilon=self.epsilon,
        )
        if self.larc:
            ratio = larc_clip(ratio, ops.cast(lr, "float32"))
        return ratio

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        g = ops.cast(gradient, dtype)
        i = self._get_variable_index(variable)
        weight_decay = self.weight_decay if self._decays(variable) else 0.0
        d = g + variable * weight_decay if weight_decay else g
        scale = lr
        if self._adapts[i]:
            ratio = self._ratio(variable, g, d, weight_decay, lr)
            scale = lr * ops.cast(ratio, dtype)
            if weight_decay:
                # The norm above and the step below each compute `d` in
                # their own loop instead of sharing a full-size temporary
                # (see `ops.xla_hints.optimization_barrier`).
                g, w, wd = optimization_barrier(
                    g,
                    ops.convert_to_tensor(variable),
                    ops.convert_to_tensor(weight_decay, dtype),
                )
                d = g + w * wd
        step = d * scale
        if not self.momentum:
            self.assign_sub(variable, step)
            return
        buf = self._momentums[i]
        new_buf = ops.add(ops.multiply(buf, self.momentum), step)
        self.assign(buf, new_buf)
        if self.nesterov:
            self.assign_sub(variable, new_buf * self.momentum + step)
        else:
            self.assign_sub(variable, new_buf)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "nesterov": self.nesterov,
                "trust_coefficient": self.trust_coefficient,
                "epsilon": self.epsilon,
                "trust_mode": self.trust_mode,
                "exclude_from_layer_adaptation": (
                    layer_adaptation.serialize_exclusions(
                        self.exclude_from_layer_adaptation
                    )
                ),
                "larc": self.larc,
            }
        )
        return config
