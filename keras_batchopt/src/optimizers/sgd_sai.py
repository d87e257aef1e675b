import math

import keras
from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.backend import dispatch
from keras_batchopt.src.ops.gradient_snr import gradient_snr
from keras_batchopt.src.optimizers.batch_optimizer import BatchOptimizer
from keras_batchopt.src.optimizers.slots import scalar_slot_name

# The value of a gSNR slot that has not seen a gradient yet. A computed gSNR
# is a ratio of non-negative numbers, so it is never negative.
UNSET = -1.0


@keras_batchopt_export("keras_batchopt.optimizers.SGDSaI")
class SGDSaI(BatchOptimizer):
    """SGD-SaI: SGD with momentum and learning-rate scaling at initialization.

    SGD-SaI (Xu et al., 2024) gives each variable a fixed learning-rate
    scale, the signal-to-noise ratio of the first gradient it receives
    (`gSNR`: the gradient's norm over its standard deviation), and then
    runs SGD with dampened momentum and decoupled weight decay. It keeps
    one buffer per variable (half of AdamW's state) and no second moment.
    This class follows the official code (PyPI `sgd-sai` 1.0.3, class
    `SGD_sai`) step for step.

    Update rule for a variable `w` with gradient `g`:

    ```
    gSNR = ||g|| / (std(g) + epsilon)   # at the variable's first gradient
                                        # only; unbiased std, float32
    buf = g                             # at the first gradient
    buf = momentum * buf + (1 - momentum) * g      # afterwards
    w = w * (1 - learning_rate * weight_decay)
        - learning_rate * gSNR * buf
    ```

    With `momentum=0` no buffer is kept and `buf = g`. Variables excluded
    from weight decay skip the factor `1 - learning_rate * weight_decay`.

    Args:
        learning_rate: a float >= 0, a
            `keras.optimizers.schedules.LearningRateSchedule`, or a callable
            with no arguments. Defaults to `0.01` (official code).
        momentum: a float in [0, 1). Defaults to `0.9`. With `0` no buffer
            is kept (plain SGD scaled by gSNR).
        epsilon: a float > 0 added to the standard deviation in the gSNR.
            Defaults to `1e-8`.
        weight_decay: a float >= 0; the decay is decoupled and scaled by the
            learning rate only, not by the gSNR. Defaults to `0.01`
            (official code). Exclude variables with
            `exclude_from_weight_decay()`.
        official: a bool. Defaults to `False`: a variable whose first
            gradient has an undefined (one element) or zero standard
            deviation gets a gSNR of 1, so a `Dense(1)` bias trains as
            plain SGD with momentum. `True` reproduces the official code
            exactly: such a variable gets `||g|| / epsilon` (1e8 times the
            gradient's norm by default), which makes common models (a
            regression head with one output) diverge to NaN at once.
        **kwargs: the base optimizer arguments (`name`, `clipnorm`,
            `clipvalue`, `global_clipnorm`, `use_ema`, `ema_momentum`,
            `ema_overwrite_frequency`, `loss_scale_factor`,
            `gradient_accumulation_steps`).

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(
    ...     optimizer=keras_batchopt.optimizers.SGDSaI(
    ...         learning_rate=1e-3, weight_decay=1e-2
    ...     ),
    ...     loss="mse",
    ... )
    >>> x, y = np.ones((8, 4)), np.zeros((8, 1))
    >>> history = model.fit(x, y, epochs=2, verbose=0)

    References:
        - [Xu et al., 2024](https://arxiv.org/abs/2412.11768), No More Adam:
          Learning Rate Scaling at Initialization is All You Need.
        - Official code: https://github.com/AnonymousAlethiometer/SGD_SaI
          (`sgd_sai/sgd_sai.py`, PyPI `sgd-sai` 1.0.3).

    Note:
        - **When the gSNR is taken.** Each variable's gSNR is computed from
          the first gradient *that variable* receives and then frozen (a
          float32 scalar optimizer variable per model variable, holding
          `-1` until then). The official code computes all of them at the
          first `step()`; the two agree whenever every variable has a
          gradient at the first step. A variable whose first gradient
          comes later (`None` before, which Keras skips with a warning)
          takes its gSNR, and starts its buffer, at that later step; the
          official code fails there (`KeyError`).
        - **One-element and constant gradients** (scalars, a bias of one
          unit, a first gradient whose entries are all equal, or all zero)
          have no usable standard deviation. The official code takes it as
          0 (its NaN replaced by 0), so their gSNR is `||g|| / epsilon`:
          a Dense(1) regression head's bias then moves by about 1e8 times
          its gradient and the loss is NaN after the first steps, and a
          variable whose first gradient is zero never moves again (gSNR
          0). By default this class gives these variables a gSNR of 1
          (the learning rate unscaled); `official=True` restores the
          official numbers. Every other variable is identical in both
          modes.
        - **momentum=0** works here (plain gSNR-scaled SGD, no buffer); the
          official code fails with it (its buffer is never defined).
        - **pytorch_optimizer's `SGDSaI`** differs: it starts the buffer at
          zeros, so its first step is `1 - momentum` times this one (10x
          smaller at `0.9`), and it sets the std to 0 (gSNR = `||g||`) for
          every rank-1 variable and every tensor whose first dimension is 1.
          This class follows the official code on both points.
        - **Norms** and the standard deviation are computed in float32
          whatever the variable's dtype, only while a variable has no gSNR
          (a conditional in compiled steps).
        - **Speed.** On the torch backend the update is one compiled,
          in-place kernel per variable (`w, g, buf` read once, no
          temporaries), and the gSNR is computed only for the variables
          that have none.
    """

    _fast_path_modules = {
        **BatchOptimizer._fast_path_modules,
        "torch": "optimizers.torch_sgd_sai",
    }
    _decay_in_update_step = True

    # How `scale_learning_rate(rule="auto")` scales it with the batch.
    batch_scaling_rule = "linear"

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.9,
        epsilon=1e-8,
        weight_decay=0.01,
        official=False,
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
        self.epsilon = validation.check_positive("epsilon", epsilon)
        self.official = validation.check_bool("official", official)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._gsnrs = []
        self._momentums = []
        for variable in var_list:
            self._gsnrs.append(
                self.add_variable(
                    shape=(),
                    initializer=keras.initializers.Constant(UNSET),
                    dtype="float32",
                    name=scalar_slot_name(variable, "gsnr"),
                )
            )
            if self.momentum:
                self._momentums.append(
                    self.add_variable_from_reference(variable, "momentum")
                )

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        i = self._get_variable_index(variable)
        g = ops.cast(gradient, dtype)
        slot = self._gsnrs[i]
        current = ops.convert_to_tensor(slot)
        first = ops.less(current, 0.0)
        size = math.prod(variable.shape)
        # Computed only while unset (a branch, not a select: the ratio's
        # three reductions would otherwise run every step).
        # Run eagerly on JAX, the `cond` is compiled once per shape, not at
        # each call (the backend's `eager` module).
        gsnr = dispatch.backend_module("eager").call_compiled_once(
            _gsnr_or_current,
            (first, gradient, current, self.epsilon, size, self.official),
            static_argnums=(3, 4, 5),
        )
        self.assign(slot, gsnr)
        if self.momentum:
            buf = self._momentums[i]
            averaged = ops.add(
                ops.multiply(buf, self.momentum), g * (1.0 - self.momentum)
            )
            direction = ops.where(first, g, averaged)
            self.assign(buf, direction)
        else:
            direction = g
        lr = ops.cast(learning_rate, dtype)
        step = direction * (lr * ops.cast(gsnr, dtype))
        if self._decays(variable):
            decay = 1.0 - lr * self.weight_decay
            self.assign(variable, variable * decay - step)
        else:
            self.assign_sub(variable, step)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "epsilon": self.epsilon,
                "official": self.official,
            }
        )
        return config


def _gsnr_or_current(first, gradient, current, epsilon, size, official):
    """The gradient's gSNR where `first`, else `current` (a `cond`)."""
    return ops.cond(
        first,
        lambda: gradient_snr(gradient, epsilon, size, official),
        lambda: current,
    )
