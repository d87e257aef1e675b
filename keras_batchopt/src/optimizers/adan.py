from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.ops.bias_correction import bias_correction
from keras_batchopt.src.ops.clipping import global_norm_clip_factor
from keras_batchopt.src.ops.xla_hints import after
from keras_batchopt.src.optimizers.batch_optimizer import BatchOptimizer


@keras_batchopt_export("keras_batchopt.optimizers.Adan")
class Adan(BatchOptimizer):
    """Adan: adaptive Nesterov momentum (Xie et al., 2022).

    Adan keeps Adam's per-coordinate scaling and adds a moving average of
    gradient *differences*, a cheap stand-in for Nesterov's look-ahead
    gradient. This class follows the official PyTorch code
    (`sail-sg/Adan`, `adan.py`) step for step, including bias correction,
    `epsilon` outside the square root, proximal weight decay, global
    gradient-norm clipping and restarts.

    Update rule for a variable `w` with gradient `g` at step `t`
    (1-based, counted from the start or the last restart):

    ```
    c = min(1, max_grad_norm / (||G|| + epsilon))   # if max_grad_norm > 0
    g = c * g                                        # G: all gradients
    d = g - g_prev            (d = 0 when t == 1)
    m = beta_1 * m + (1 - beta_1) * g
    v = beta_2 * v + (1 - beta_2) * d
    n = beta_3 * n + (1 - beta_3) * (g + beta_2 * d) ** 2
    denom = sqrt(n) / sqrt(1 - beta_3**t) + epsilon
    step = (lr / (1 - beta_1**t)) * m + (lr * beta_2 / (1 - beta_2**t)) * v
    w = (w - step / denom) / (1 + lr * weight_decay)     # no_prox=False
    w = w * (1 - lr * weight_decay) - step / denom       # no_prox=True
    g_prev = g
    ```

    Args:
        learning_rate: a float >= 0, a
            `keras.optimizers.schedules.LearningRateSchedule`, or a callable
            with no arguments. Defaults to `0.001`. The authors report that
            Adan tolerates peak learning rates 5-10x those of AdamW.
        beta_1: decay of the gradient average `m`, in [0, 1). Defaults to
            `0.98`.
        beta_2: decay of the gradient-difference average `v`, in [0, 1);
            also the weight of the Nesterov term. Defaults to `0.92`.
        beta_3: decay of the second moment `n`, in [0, 1). Defaults to
            `0.99`.
        epsilon: a float > 0 added to the denominator after the square root
            and to the global norm in clipping. Defaults to `1e-8`.
        weight_decay: a float >= 0. Defaults to `0.0`; the authors'
            README recommends `0.02`. Variables named in
            `exclude_from_weight_decay()` are not decayed.
        no_prox: if `False` (default), weight decay is the proximal step
            `w / (1 + lr * weight_decay)` taken after the update, as in the
            official code. If `True`, it is the decoupled (AdamW-style)
            `w * (1 - lr * weight_decay)` taken before it.
        max_grad_norm: a float >= 0. If positive, all gradients are scaled
            by `min(1, max_grad_norm / (global_norm + epsilon))` before the
            step, and the scaled gradient is the one kept as `g_prev`.
            Defaults to `0.0` (off). Keras's `global_clipnorm` also works
            but has no `epsilon`.
        restart_every: `None` (default) or an integer >= 1. If set, Adan
            restarts every `restart_every` steps: `m`, `v` and `n` start
            from zero, the bias corrections start over and the first
            gradient difference is zero again. `restart()` restarts by hand.
        **kwargs: the base optimizer arguments (`name`, `clipnorm`,
            `clipvalue`, `global_clipnorm`, `use_ema`, `ema_momentum`,
            `ema_overwrite_frequency`, `loss_scale_factor`,
            `gradient_accumulation_steps`).

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(
    ...     optimizer=keras_batchopt.optimizers.Adan(
    ...         learning_rate=1e-2, weight_decay=0.02
    ...     ),
    ...     loss="mse",
    ... )
    >>> x, y = np.ones((8, 4)), np.zeros((8, 1))
    >>> history = model.fit(x, y, epochs=2, verbose=0)

    References:
        - [Xie et al., 2022](https://arxiv.org/abs/2208.06677), Adan:
          Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep
          Models (TPAMI 2024).
        - Official code: https://github.com/sail-sg/Adan (`adan.py`).

    Note:
        - **Betas.** The paper writes `m = (1 - b1) m + b1 g` with
          `(b1, b2, b3) = (0.02, 0.08, 0.01)`. The code and this class use
          Adam-style betas, `beta = 1 - b_paper`: `(0.98, 0.92, 0.99)` is the
          same setting.
        - **Paper vs code.** Algorithm 1 of the paper starts from
          `m0 = g0`, has no bias correction and puts epsilon inside the
          square root. The authors recommend the released code (sail-sg/Adan
          issue #8), which this class follows: zero initial moments, bias
          correction, epsilon outside.
        - **optax.** `optax.adan` (0.2.8) weights the difference term by
          `1 - b2` (0.08) where the official code uses `b2` (0.92), both in
          `n` and in the step (optax PR #1715), applies AdamW-style decay
          only and adds `eps_root` inside the square root. Its results
          differ from this class from step 2 on.
        - **Weight decay** happens inside Adan's step, not in Keras's
          generic pre-step decay, so `no_prox` decides its form.
        - **Mixed precision.** With `mixed_float16`, Keras keeps trainable
          variables in float32 and so the state is float32; wrap the
          optimizer in `keras.optimizers.LossScaleOptimizer` as usual.
        - **Speed.** On the torch backend a fused in-place kernel runs per
          variable; on TensorFlow graph-mode steps the update is compiled
          by XLA; on JAX the compiled step fuses this generic code (see
          `keras_batchopt.config` to switch fast paths off).
    """

    _fast_path_modules = {
        **BatchOptimizer._fast_path_modules,
        "torch": "optimizers.torch_adan",
    }
    _decay_in_update_step = True

    # How `scale_learning_rate(rule="auto")` scales it with the batch.
    batch_scaling_rule = "sqrt"

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.98,
        beta_2=0.92,
        beta_3=0.99,
        epsilon=1e-8,
        weight_decay=0.0,
        no_prox=False,
        max_grad_norm=0.0,
        restart_every=None,
        name=None,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            name=name,
            **kwargs,
        )
        self.beta_1 = validation.check_beta("beta_1", beta_1)
        self.beta_2 = validation.check_beta("beta_2", beta_2)
        self.beta_3 = validation.check_beta("beta_3", beta_3)
        self.epsilon = validation.check_positive("epsilon", epsilon)
        self.no_prox = validation.check_bool("no_prox", no_prox)
        self.max_grad_norm = validation.check_non_negative(
            "max_grad_norm", max_grad_norm
        )
        self.restart_every = validation.check_positive_int_or_none(
            "restart_every", restart_every
        )

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._exp_avgs = []
        self._exp_avg_diffs = []
        self._exp_avg_sqs = []
        self._prev_grads = []
        for variable in var_list:
            self._exp_avgs.append(
                self.add_variable_from_reference(variable, "exp_avg")
            )
            self._exp_avg_diffs.append(
                self.add_variable_from_reference(variable, "exp_avg_diff")
            )
            self._exp_avg_sqs.append(
                self.add_variable_from_reference(variable, "exp_avg_sq")
            )
            self._prev_grads.append(
                self.add_variable_from_reference(variable, "prev_grad")
            )
        self._restart_iteration = self.add_variable(
            shape=(),
            initializer="zeros",
            dtype=self._iterations.dtype,
            name="restart_iteration",
        )

    def restart(self):
        """Restarts Adan: zeroes `m`, `v` and `n` and starts `t` at 1.

        The next step takes a zero gradient difference, as the official
        `restart_opt()` does. On JAX, call it between epochs (for example
        from a callback's `on_epoch_begin`), when the trainer's state is in
        sync with the optimizer's variables.
        """
        if not self.built:
            return
        for state in (self._exp_avgs, self._exp_avg_diffs, self._exp_avg_sqs):
            for variable in state:
                variable.assign(ops.zeros(variable.shape, variable.dtype))
        # A copy: on JAX the cast can return the counter's own buffer, and
        # two variables sharing one buffer break the trainer's donation.
        self._restart_iteration.assign(
            ops.copy(ops.cast(self.iterations, self._restart_iteration.dtype))
        )

    def _step_coefficients(self, learning_rate, dtype):
        """Scalars of this step, shared by the generic and fast paths."""
        step = ops.subtract(
            ops.cast(self.iterations, self._restart_iteration.dtype),
            self._restart_iteration,
        )
        if self.restart_every:
            step = ops.mod(step, self.restart_every)
        step = ops.cast(step + 1, dtype)
        # 0 on the first step after the start or a restart, else 1: it zeroes
        # the difference and drops the old moments at a restart.
        later = ops.cast(ops.greater(step, 1), dtype)
        lr = ops.cast(learning_rate, dtype)
        wd = 0.0 if self.weight_decay is None else self.weight_decay
        return {
            "later": later,
            "keep_1": later * self.beta_1,
            "keep_2": later * self.beta_2,
            "keep_3": later * self.beta_3,
            "step_m": lr / bias_correction(self.beta_1, step, dtype),
            "step_v": lr
            * self.beta_2
            / bias_correction(self.beta_2, step, dtype),
            "bc3_sqrt": ops.sqrt(bias_correction(self.beta_3, step, dtype)),
            "decay": (1.0 - lr * wd) if self.no_prox else (1.0 + lr * wd),
        }

    def _transform_gradients(self, grads, trainable_variables):
        if not self.max_grad_norm:
            return grads
        factor = global_norm_clip_factor(
            grads, self.max_grad_norm, self.epsilon
        )
        return [g * ops.cast(factor, g.dtype) for g in grads]

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        c = self._step_coefficients(learning_rate, dtype)
        g = ops.cast(gradient, dtype)
        i = self._get_variable_index(variable)
        m = self._exp_avgs[i]
        v = self._exp_avg_diffs[i]
        n = self._exp_avg_sqs[i]
        prev = self._prev_grads[i]

        d = ops.multiply(ops.subtract(g, prev), c["later"])
        new_m = ops.add(ops.multiply(m, c["keep_1"]), g * (1.0 - self.beta_1))
        new_v = ops.add(ops.multiply(v, c["keep_2"]), d * (1.0 - self.beta_2))
        u = ops.add(g, d * self.beta_2)
        new_n = ops.add(
            ops.multiply(n, c["keep_3"]), ops.square(u) * (1.0 - self.beta_3)
        )
        denom = ops.sqrt(new_n) / c["bc3_sqrt"] + self.epsilon
        update = (new_m * c["step_m"] + new_v * c["step_v"]) / denom
        self.assign(m, new_m)
        self.assign(v, new_v)
        self.assign(n, new_n)
        if not self._decays(variable):
            self.assign_sub(variable, update)
        elif self.no_prox:
            self.assign(variable, variable * c["decay"] - update)
        else:
            self.assign(variable, (variable - update) / c["decay"])
        # Written after `v` and `n`, which read the old `prev`: under XLA
        # this spares a copy of `prev` (see `ops.xla_hints.after`).
        self.assign(prev, after(g, new_v, new_n))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "beta_3": self.beta_3,
                "epsilon": self.epsilon,
                "no_prox": self.no_prox,
                "max_grad_norm": self.max_grad_norm,
                "restart_every": self.restart_every,
            }
        )
        return config
