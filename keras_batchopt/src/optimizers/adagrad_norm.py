import keras
from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.ops.trust_ratio import sum_of_squares
from keras_batchopt.src.optimizers.batch_optimizer import BatchOptimizer
from keras_batchopt.src.optimizers.slots import scalar_slot_name

ACCUMULATORS = ("global", "per_variable", "coordinate")


@keras_batchopt_export("keras_batchopt.optimizers.AdaGradNorm")
class AdaGradNorm(BatchOptimizer):
    """AdaGrad-Norm: one adaptive step size from the gradient norms.

    AdaGrad-Norm (Ward, Wu and Bottou) is SGD whose step size is divided by
    `b`, the square root of the running sum of squared gradient norms. One
    scalar adapts to the scale of the problem, so the method converges for
    any learning rate, and rescaling the loss by a constant changes little
    once `b` is dominated by the gradients (see `initial_accumulator_value`).

    Update rule at each step, for gradients `G = (g_1, ..., g_n)` of all the
    variables updated in that step:

    ```
    b2 = b2 + ||G||^2                 # accumulator="global" (default)
    w_i = w_i - learning_rate * g_i / sqrt(b2)
    ```

    `accumulator="per_variable"` keeps one `b2_i = b2_i + ||g_i||^2` per
    variable; `accumulator="coordinate"` keeps one per entry,
    `b2 = b2 + g * g` (element-wise), which is diagonal AdaGrad with no
    epsilon. Every accumulator starts at `initial_accumulator_value`.

    Args:
        learning_rate: a float >= 0, a
            `keras.optimizers.schedules.LearningRateSchedule`, or a callable
            with no arguments. Defaults to `1.0` (Ward et al.; the
            AdAdaGrad code). With `accumulator="global"` the first step has
            a norm just under `learning_rate`; the coordinate-wise form
            takes steps of about `learning_rate` in every entry at first and
            usually wants a smaller value (PyTorch's Adagrad uses `0.01`).
        initial_accumulator_value: `b0^2`, the starting value of the
            accumulated *squared* norm (not `b0`), a float > 0. Defaults to
            `0.01` (the AdAdaGrad code), so `b0 = 0.1`. It bounds the first
            step and keeps the division defined; there is no other epsilon.
        accumulator: `"global"` (default; the paper's AdaGrad-Norm, one
            scalar over all gradients of the step), `"per_variable"` (one
            scalar per variable, the norm of that variable's gradient) or
            `"coordinate"` (one value per entry: diagonal AdaGrad).
        weight_decay: a float >= 0. Defaults to `0.0`. Keras's decoupled
            decay, `w = w - learning_rate * weight_decay * w`, not divided
            by `b` (taken inside the step, see Note). Exclude variables
            with `exclude_from_weight_decay()`.
        **kwargs: the base optimizer arguments (`name`, `clipnorm`,
            `clipvalue`, `global_clipnorm`, `use_ema`, `ema_momentum`,
            `ema_overwrite_frequency`, `loss_scale_factor`,
            `gradient_accumulation_steps`).

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model.compile(
    ...     optimizer=keras_batchopt.optimizers.AdaGradNorm(learning_rate=0.5),
    ...     loss="mse",
    ... )
    >>> x, y = np.ones((8, 4)), np.zeros((8, 1))
    >>> history = model.fit(x, y, epochs=2, verbose=0)

    References:
        - [Ward, Wu and Bottou, 2019](https://arxiv.org/abs/1806.01811),
          AdaGrad stepsizes: sharp convergence over nonconvex landscapes
          (JMLR 2020).
        - [Lau, Liu and Kolar, 2024](https://arxiv.org/abs/2402.11215),
          AdAdaGrad: adaptive batch size schemes for adaptive gradient
          methods; code at https://github.com/timlautk/AdAdaGrad.
        - [Duchi, Hazan and Singer, 2011](https://jmlr.org/papers/v12/duchi11a.html)
          for the coordinate-wise form.

    Note:
        - **Global norm.** With `accumulator="global"` the squared norm is
          summed over the gradients of all variables updated in the step,
          after Keras's clipping and gradient accumulation, and added to
          the accumulator once per step, before any variable moves. A
          variable whose gradient is `None` in a step is skipped and adds
          nothing.
        - **The AdAdaGrad repository's `Adagradnorm`** is another
          algorithm: for 2-D and 4-D weights it keeps one accumulator per
          output row (channel), biases borrow the last row sums, and it
          adds `1e-10` after the square root. Its weight-decay line
          subtracts `lr * weight_decay * grad` instead of
          `lr * weight_decay * w`, so its "weight decay" only rescales the
          gradient step. This class implements the paper's forms and
          Keras's decoupled decay.
        - **Coordinate mode vs `keras.optimizers.Adagrad`.** Keras's
          Adagrad adds `epsilon` inside the square root and starts at
          `0.1`; `torch.optim.Adagrad` adds `eps` (1e-10) after it and
          starts at 0. With `eps=0` and the same starting value, torch's
          Adagrad is this class's `accumulator="coordinate"`.
        - **Weight decay** has the form of Keras's generic decoupled decay
          (as `keras.optimizers.AdamW`), but this class applies it inside
          its own step: on the torch backend Keras's pre-step decay
          multiplies the variables in place, so under `stateless_apply` it
          would change the stateful variables.
        - **State** is float32 for the scalar accumulators whatever the
          variables' dtype; the coordinate accumulator has the variable's
          dtype. Norms are summed in float32.
    """

    # Keras's decoupled decay, taken inside the step: on torch, Keras's own
    # pre-step decay multiplies the variables in place, which
    # `stateless_apply` does not see (it changes the stateful variables).
    _decay_in_update_step = True

    # How `scale_learning_rate(rule="auto")` scales it with the batch.
    batch_scaling_rule = "sqrt"

    def __init__(
        self,
        learning_rate=1.0,
        initial_accumulator_value=0.01,
        accumulator="global",
        weight_decay=0.0,
        name=None,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            name=name,
            **kwargs,
        )
        self.initial_accumulator_value = validation.check_positive(
            "initial_accumulator_value", initial_accumulator_value
        )
        self.accumulator = validation.check_one_of(
            "accumulator", accumulator, ACCUMULATORS
        )

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        initializer = keras.initializers.Constant(
            self.initial_accumulator_value
        )
        self._accumulators = []
        self._global_accumulator = None
        if self.accumulator == "global":
            self._global_accumulator = self.add_variable(
                shape=(),
                initializer=initializer,
                dtype="float32",
                name="accumulator",
            )
            return
        for variable in var_list:
            if self.accumulator == "per_variable":
                slot = self.add_variable(
                    shape=(),
                    initializer=initializer,
                    dtype="float32",
                    name=scalar_slot_name(variable, "accumulator"),
                )
            else:
                slot = self.add_variable_from_reference(
                    variable, "accumulator", initializer=initializer
                )
            self._accumulators.append(slot)

    def _transform_gradients(self, grads, trainable_variables):
        if self.accumulator == "global":
            total = ops.sum(ops.stack([sum_of_squares(g) for g in grads]))
            self.assign_add(self._global_accumulator, total)
        return grads

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        g = ops.cast(gradient, dtype)
        if self.accumulator == "coordinate":
            slot = self._accumulators[self._get_variable_index(variable)]
            total = ops.add(slot, ops.square(g))
            self.assign(slot, total)
            lr = ops.cast(learning_rate, dtype)
            self._take_step(variable, g * lr / ops.sqrt(total), lr)
            return
        if self.accumulator == "global":
            # Already includes this step's gradients (_transform_gradients).
            total = ops.convert_to_tensor(self._global_accumulator)
        else:
            slot = self._accumulators[self._get_variable_index(variable)]
            total = ops.add(slot, sum_of_squares(gradient))
            self.assign(slot, total)
        scale = ops.cast(learning_rate, "float32") / ops.sqrt(total)
        lr = ops.cast(learning_rate, dtype)
        self._take_step(variable, g * ops.cast(scale, dtype), lr)

    def _take_step(self, variable, step, lr):
        """`w - lr * weight_decay * w - step`, Keras's decoupled decay."""
        if self._decays(variable):
            decayed = variable - variable * (lr * self.weight_decay)
            self.assign(variable, decayed - step)
        else:
            self.assign_sub(variable, step)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "initial_accumulator_value": self.initial_accumulator_value,
                "accumulator": self.accumulator,
            }
        )
        return config
