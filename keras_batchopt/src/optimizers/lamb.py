from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.ops import xla_hints
from keras_batchopt.src.ops.bias_correction import bias_correction
from keras_batchopt.src.ops.trust_ratio import l2_norm
from keras_batchopt.src.ops.trust_ratio import trust_ratio
from keras_batchopt.src.ops.xla_hints import optimization_barrier
from keras_batchopt.src.ops.xla_hints import unshared
from keras_batchopt.src.optimizers import layer_adaptation
from keras_batchopt.src.optimizers.batch_optimizer import BatchOptimizer


@keras_batchopt_export("keras_batchopt.optimizers.Lamb")
class Lamb(BatchOptimizer):
    """LAMB: layer-wise adaptive moments for large batches (You et al.).

    **How it differs from `keras.optimizers.Lamb`:** here weight decay is
    added to the Adam direction *before* the trust ratio is taken, as in
    the paper, TensorFlow Addons and `optax.lamb`; Keras applies it as a
    separate decoupled step outside the trust ratio, a different algorithm
    once `weight_decay > 0`. This class also excludes variables from the
    trust ratio (`exclude_from_layer_adaptation`), can clip the ratio
    (LAMBC) and switch bias correction off, uses epsilon `1e-6` (Keras:
    `1e-7`), and computes the norms in float32. With `weight_decay=0`, no
    exclusions and the same epsilon, both classes give the same steps.

    Update rule for a variable `w` with gradient `g` at step `t`:

    ```
    m = beta_1 * m + (1 - beta_1) * g
    v = beta_2 * v + (1 - beta_2) * g**2
    m_hat = m / (1 - beta_1**t)       # bias_correction=True
    v_hat = v / (1 - beta_2**t)
    u = m_hat / (sqrt(v_hat) + epsilon) + weight_decay * w
    r = ||w|| / ||u||                  # 1 if either norm is 0
    r = min(r, max_trust_ratio)        # if max_trust_ratio is set (LAMBC)
    w = w - learning_rate * r * u
    ```

    Variables excluded from weight decay drop the `weight_decay * w` term;
    variables excluded from layer adaptation take `r = 1` (an Adam step).

    Args:
        learning_rate: a float >= 0, a
            `keras.optimizers.schedules.LearningRateSchedule`, or a callable
            with no arguments. Defaults to `0.001`.
        beta_1: decay of the first moment `m`, in [0, 1). Defaults to `0.9`.
        beta_2: decay of the second moment `v`, in [0, 1). Defaults to
            `0.999`.
        epsilon: a float > 0 added after the square root. Defaults to
            `1e-6` (TensorFlow Addons, optax, timm).
        weight_decay: a float >= 0, added to the update inside the trust
            ratio. Defaults to `0.0`; BERT pre-training used `0.01`. Exclude
            variables with `exclude_from_weight_decay()`.
        exclude_from_layer_adaptation: which variables take `r = 1`:
            `None` (default) excludes exactly the variables excluded from
            weight decay, as TensorFlow Addons does; a list of regular
            expressions is searched in each variable's path
            (`variable.path`, such as `"sequential/dense/bias"`; a model
            reloaded with `load_model` drops the outer model's name, so
            name layers or variables, not the model): for
            example `["bias", "norm"]`, or `[]` to adapt every variable as
            `optax.lamb` does; a callable takes a `keras.Variable` and
            returns True to exclude it (register it with
            `keras.saving.register_keras_serializable` to save the
            optimizer).
        max_trust_ratio: `None` (default) or a float > 0 that caps the trust
            ratio; `1.0` is LAMBC (timm's `trust_clip=True`).
        bias_correction: whether to divide the moments by `1 - beta**t`.
            Defaults to `True`; `False` is the paper's v3 form.
        **kwargs: the base optimizer arguments (`name`, `clipnorm`,
            `clipvalue`, `global_clipnorm`, `use_ema`, `ema_momentum`,
            `ema_overwrite_frequency`, `loss_scale_factor`,
            `gradient_accumulation_steps`).

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> optimizer = keras_batchopt.optimizers.Lamb(
    ...     learning_rate=1e-2, weight_decay=0.01
    ... )
    >>> optimizer.exclude_from_weight_decay(var_names=["bias"])
    >>> model.compile(optimizer=optimizer, loss="mse")
    >>> x, y = np.ones((8, 4)), np.zeros((8, 1))
    >>> history = model.fit(x, y, epochs=2, verbose=0)

    References:
        - [You et al., 2020](https://arxiv.org/abs/1904.00962), Large Batch
          Optimization for Deep Learning: Training BERT in 76 minutes
          (ICLR 2020).
        - TensorFlow Addons `tfa.optimizers.LAMB` (archived), the reference
          this class matches step for step.
        - [Fong et al., 2020](https://arxiv.org/abs/2006.06449) for the
          clipped trust ratio (LAMBC).

    Note:
        - **Peers.** `optax.lamb` applies the trust ratio to every variable
          (its `mask` only masks decay): pass
          `exclude_from_layer_adaptation=[]` to match it when decay is
          masked. timm's `Lamb` clips the global gradient norm to 1 by
          default (use Keras's `global_clipnorm=1.0` here).
          `pytorch_optimizer.Lamb` has no bias correction, decoupled decay
          and a weight norm clamped at 10 by default: a different variant.
        - **String name.** `"lamb"` is left to Keras, whose
          `keras.optimizers.Lamb` owns it (Keras 3.8 to 3.15 do not resolve
          it: `compile(optimizer="lamb")` raises, with or without this
          package). This class, with its defaults, is
          `compile(optimizer="keras_batchopt>Lamb")`, its registered name;
          the package's other optimizers have snake_case names (`"adan"`).
        - **Norms** are computed in float32 whatever the variable's dtype.
        - **Speed.** On the torch backend a compiled in-place kernel runs per
          large variable (norms and update in one call) and small variables
          are updated together by multi-tensor operations; on TensorFlow
          graph-mode steps the update is compiled by XLA. Under XLA (JAX,
          TensorFlow) the trust-ratio norm and the step each compute the
          update in their own pass, so no full-size temporary is written.
    """

    _fast_path_modules = {
        **BatchOptimizer._fast_path_modules,
        "torch": "optimizers.torch_lamb",
    }
    _decay_in_update_step = True

    # How `scale_learning_rate(rule="auto")` scales it with the batch.
    batch_scaling_rule = "sqrt"

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        weight_decay=0.0,
        exclude_from_layer_adaptation=None,
        max_trust_ratio=None,
        bias_correction=True,
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
        self.epsilon = validation.check_positive("epsilon", epsilon)
        self.exclude_from_layer_adaptation = layer_adaptation.from_argument(
            exclude_from_layer_adaptation
        )
        if max_trust_ratio is not None:
            max_trust_ratio = validation.check_positive(
                "max_trust_ratio", max_trust_ratio
            )
        self.max_trust_ratio = max_trust_ratio
        self.bias_correction = validation.check_bool(
            "bias_correction", bias_correction
        )

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums = []
        self._velocities = []
        for variable in var_list:
            self._momentums.append(
                self.add_variable_from_reference(variable, "momentum")
            )
            self._velocities.append(
                self.add_variable_from_reference(variable, "velocity")
            )
        # Static per-variable configuration, fixed at build time.
        self._adapts = layer_adaptation.adapt_flags(
            self.exclude_from_layer_adaptation,
            var_list,
            default_rule=lambda v: not self._use_weight_decay(v),
        )

    def _update_structure(self):
        return (super()._update_structure(), tuple(self._adapts))

    def _step_coefficients(self, learning_rate, dtype):
        """Scalars of this step, shared by the generic and fast paths."""
        lr = ops.cast(learning_rate, dtype)
        if not self.bias_correction:
            one = ops.ones((), dtype)
            return {"lr": lr, "bc_1": one, "bc_2": one}
        step = ops.cast(self.iterations + 1, dtype)
        return {
            "lr": lr,
            "bc_1": bias_correction(self.beta_1, step, dtype),
            "bc_2": bias_correction(self.beta_2, step, dtype),
        }

    def _ratio(self, variable, update):
        """The (clipped) trust ratio of `update`, in float32."""
        ratio = trust_ratio(l2_norm(variable), l2_norm(update))
        if self.max_trust_ratio is not None:
            ratio = ops.minimum(ratio, self.max_trust_ratio)
        return ratio

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        c = self._step_coefficients(learning_rate, dtype)
        g = ops.cast(gradient, dtype)
        i = self._get_variable_index(variable)
        m = self._momentums[i]
        v = self._velocities[i]
        new_m = ops.add(ops.multiply(m, self.beta_1), g * (1.0 - self.beta_1))
        new_v = ops.add(
            ops.multiply(v, self.beta_2), ops.square(g) * (1.0 - self.beta_2)
        )
        self.assign(m, new_m)
        self.assign(v, new_v)
        w = ops.convert_to_tensor(variable)
        scalars = (c["bc_1"], c["bc_2"], self.epsilon)
        if self._decays(variable):
            scalars += (self.weight_decay,)
        if not self._adapts[i]:
            update = _direction(new_m, new_v, w, *scalars)
            self.assign_sub(variable, update * c["lr"])
            return
        # Under XLA the norm and the step each compute the update in their
        # own loop: shared, it would be a full-size temporary, written and
        # read back every step (see `ops.xla_hints`).
        update = _direction(new_m, new_v, w, *unshared(w, *scalars))
        ratio = self._ratio(w, update)
        if xla_hints.active():
            new_m, new_v, w, *scalars = optimization_barrier(
                new_m, new_v, w, *(_tensor(s, dtype) for s in scalars)
            )
            update = _direction(new_m, new_v, w, *scalars)
        self.assign_sub(variable, update * (c["lr"] * ops.cast(ratio, dtype)))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "exclude_from_layer_adaptation": (
                    layer_adaptation.serialize_exclusions(
                        self.exclude_from_layer_adaptation
                    )
                ),
                "max_trust_ratio": self.max_trust_ratio,
                "bias_correction": self.bias_correction,
            }
        )
        return config


def _direction(m, v, w, bc_1, bc_2, epsilon, weight_decay=None):
    """The bias-corrected Adam direction plus the decay term, `u`."""
    update = (m / bc_1) / (ops.sqrt(v / bc_2) + epsilon)
    if weight_decay is not None:
        update = update + w * weight_decay
    return update


def _tensor(scalar, dtype):
    """`scalar` as a tensor (a Python number in `dtype`)."""
    if isinstance(scalar, (int, float)):
        return ops.convert_to_tensor(scalar, dtype)
    return scalar
