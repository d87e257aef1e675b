import contextlib
import random

from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.ops import hessian_averaging as averaging
from keras_batchopt.src.ops.bias_correction import bias_correction
from keras_batchopt.src.optimizers.batch_optimizer import BatchOptimizer

NOT_WIRED = (
    "AdaHessian needs a Hessian-vector product with every gradient, and "
    "Keras's own training step computes gradients only. Call "
    "`keras_batchopt.curvature.enable_hessian_training(model)` before "
    "`fit` (again after `keras.models.load_model`), or subclass "
    "`keras_batchopt.curvature.HessianTrainStep`; in a custom loop, apply "
    "the gradients inside `with optimizer.using_hessian(hvps, variables):`."
)


@keras_batchopt_export("keras_batchopt.optimizers.AdaHessian")
class AdaHessian(BatchOptimizer):
    """AdaHessian: Adam with a Hutchinson Hessian diagonal (Yao et al.).

    AdaHessian replaces Adam's squared-gradient average by a moving average
    of the squared Hessian diagonal, estimated each step with one
    Hutchinson probe: for a Rademacher vector `z` (entries +-1), `z * Hz`
    is an unbiased estimate of `diag(H)`, and its absolute value is `|Hz|`.
    The estimate is averaged over blocks of coordinates that share
    curvature (the taps of a convolution filter), as in the official code.

    It needs one Hessian-vector product per step, which a Keras optimizer
    cannot compute from gradients: wire the model once with
    `keras_batchopt.curvature.enable_hessian_training(model)` (or subclass
    `keras_batchopt.curvature.HessianTrainStep`), then `compile` and `fit`
    as usual, on every backend. Without that wiring the first step raises
    a `ValueError` rather than taking a silent first-order step.

    Update rule for a variable `w` with gradient `g` at step `t`
    (1-based), probe `z` and Hessian-vector product `Hz`:

    ```
    D = block_average(|Hz|)                  # see hessian_averaging
    m = beta_1 * m + (1 - beta_1) * g
    v = beta_2 * v + (1 - beta_2) * D**2     # on refresh steps only
    denom = (sqrt(v) / sqrt(1 - beta_2**n))**hessian_power + epsilon
    w = w - learning_rate * (m / (1 - beta_1**t) / denom + weight_decay * w)
    ```

    where `n` counts the refresh steps so far (`n = t` with the default
    `hessian_update_interval=1`).

    Args:
        learning_rate: a float >= 0, a
            `keras.optimizers.schedules.LearningRateSchedule`, or a callable
            with no arguments. Defaults to `0.15` (official code; its
            CIFAR-10 recipe decays it 10x at epochs 80 and 120).
        beta_1: decay of the gradient average, in [0, 1). Defaults to
            `0.9`.
        beta_2: decay of the Hessian-diagonal average, in [0, 1). Defaults
            to `0.999`.
        epsilon: a float >= 0 added to the denominator. Defaults to `1e-4`
            (official code; timm uses `1e-8`, pytorch_optimizer `1e-16`).
        weight_decay: a float >= 0, decoupled and scaled by the learning
            rate as in the official code. Defaults to `0.0` (the CIFAR
            scripts use `5e-4`). Exclude variables with
            `exclude_from_weight_decay()`.
        hessian_power: the exponent `k` of the denominator, in (0, 1].
            Defaults to `1.0`; the authors suggest `0.5` for some tasks.
        hessian_averaging: which coordinates share one Hessian value.
            `"spatial"` (default; the official `image_classification`
            code): convolution kernels (rank >= 3) are averaged over their
            spatial axes, every other variable is left as is.
            `"spatial_and_input"` (the official `instruction` code's
            defaults): also dense kernels, over their input axis (axis 0
            of Keras's `(in, out)` layout). `"none"`: no averaging. An
            integer `b`: contiguous blocks of `b` elements of each
            flattened variable of rank >= 2 (it must divide their sizes;
            biases and other 1-D variables are not averaged).
        hessian_update_interval: an integer >= 1. The Hessian-vector
            product is used (and the Hessian average updated) on steps
            `0, N, 2N, ...` only. The training step skips computing it on
            the other steps on torch, on TensorFlow without XLA and on
            JAX off the CPU, which saves most of its cost; XLA on a CPU
            runs convolutions inside a conditional far slower, so there it
            is computed every step and ignored. A stale estimate can take
            too large steps early in training, when the curvature changes
            fast: lower the learning rate with it. Defaults to `1` (every
            step, as in the paper and the official code).
        seed: an integer, or `None` to draw one at construction. The
            Rademacher probes of step `t` are a function of `(seed, t)`,
            so every replica draws the same probes (which the official
            code obtains with an all-reduce) and a model resumed from a
            checkpoint draws the probes it would have drawn. Saved in the
            config.
        **kwargs: the base optimizer arguments (`name`, `clipnorm`,
            `clipvalue`, `global_clipnorm`, `use_ema`, `ema_momentum`,
            `ema_overwrite_frequency`, `loss_scale_factor`,
            `gradient_accumulation_steps`).

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model = keras_batchopt.curvature.enable_hessian_training(model)
    >>> model.compile(
    ...     optimizer=keras_batchopt.optimizers.AdaHessian(0.1), loss="mse"
    ... )
    >>> x, y = np.ones((8, 4)), np.zeros((8, 1))
    >>> history = model.fit(x, y, epochs=2, verbose=0)

    References:
        - [Yao et al., 2021](https://arxiv.org/abs/2006.00719), ADAHESSIAN:
          An Adaptive Second Order Optimizer for Machine Learning (AAAI).
        - The official code, amirgholami/adahessian
          (`image_classification/optim_adahessian.py`,
          `instruction/adahessian.py`), whose update this class follows.

    Note:
        - **Probes.** One Rademacher probe per step, as in the official
          code (timm averages `n_samples` probes of the signed `z * Hz`).
        - **Averaging.** The official code averages only rank-4 kernels
          (PyTorch `(out, in, kh, kw)`, over `kh, kw`) and fails on rank-3
          ones; here every convolution kernel is averaged over its spatial
          axes in Keras's `(*spatial, in, out)` layout. An integer block
          size groups contiguous elements of Keras's layout, which are not
          the elements grouped by the same block size in PyTorch's.
        - **Stale Hessians.** With `hessian_update_interval > 1` the
          Hessian average is updated on refresh steps only and its bias
          correction counts refreshes (pytorch_optimizer's
          `update_period` keeps the step count; timm re-uses the stale
          estimate every step).
        - **Gradient accumulation.** The Hessian estimates of the
          micro-batches are averaged like the gradients are (this costs
          one more slot per variable while accumulation is on).
        - **Loss scaling.** The Hessian-vector product is unscaled by the
          loss scale, as the gradients are.
        - **Weight decay** is decoupled and scaled by the learning rate,
          exactly the official `w - lr * (... + weight_decay * w)`.
        - **Speed.** On the torch backend the update runs one in-place
          kernel per variable (see `keras_batchopt.config` to switch fast
          paths off); on JAX and TensorFlow the generic code runs inside
          the compiled training step. The probes of a step are the bits of
          one draw of 32-bit words, one random number per 32 entries.
        - **Distribution.** Under a `tf.distribute` strategy the Hessian
          training step sums the replicas' Hessian-vector products as the
          gradients are summed (every replica draws the same probes), and
          under `keras.distribution` on JAX the product is taken on the
          global batch: both give the weights of one device (tested with
          `MirroredStrategy` on 2 replicas, and `DataParallel` and a
          sharded `ModelParallel` layout on 8 devices). The spatial
          average of a sharded kernel is over the whole kernel.
    """

    # No TensorFlow XLA update: the Hessian-vector products arrive as
    # tensors of the training step's graph, which a separately compiled
    # update cannot capture. On torch, one in-place kernel per variable.
    _fast_path_modules = {"torch": "optimizers.torch_ada_hessian"}
    # The decay is the official `w - lr * (... + weight_decay * w)`, taken
    # in the step (Keras's torch pre-step decay mutates variables in place,
    # which JAX-style stateless use on torch must not see).
    _decay_in_update_step = True

    # How `scale_learning_rate(rule="auto")` scales it with the batch.
    batch_scaling_rule = "sqrt"

    # Read by the Hessian training steps of keras_batchopt.curvature.
    needs_hessian = True

    def __init__(
        self,
        learning_rate=0.15,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-4,
        weight_decay=0.0,
        hessian_power=1.0,
        hessian_averaging="spatial",
        hessian_update_interval=1,
        seed=None,
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
        self.epsilon = validation.check_non_negative("epsilon", epsilon)
        self.hessian_power = validation.check_in_interval(
            "hessian_power", hessian_power, 0.0, 1.0, False, True
        )
        self.hessian_averaging = averaging.check_mode(hessian_averaging)
        self.hessian_update_interval = validation.check_positive_int(
            "hessian_update_interval", hessian_update_interval
        )
        if seed is None:
            seed = random.SystemRandom().randrange(2**31)
        self.seed = validation.check_non_negative_int("seed", seed)
        self._pending_hessian = None

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums = []
        self._hessian_averages = []
        self._averaging_axes = []
        for variable in var_list:
            self._momentums.append(
                self.add_variable_from_reference(variable, "momentum")
            )
            self._hessian_averages.append(
                self.add_variable_from_reference(variable, "hessian_average")
            )
            if isinstance(self.hessian_averaging, int):
                averaging.check_block_size(
                    variable.shape, self.hessian_averaging, variable.path
                )
            self._averaging_axes.append(
                averaging.averaging_axes(
                    tuple(variable.shape), self.hessian_averaging
                )
            )
        self._hessian_accumulators = []
        if self.gradient_accumulation_steps:
            for variable in var_list:
                self._hessian_accumulators.append(
                    self.add_variable_from_reference(
                        variable, "hessian_accumulator"
                    )
                )

    def refreshes_hessian(self):
        """Whether this step uses a fresh Hessian-vector product (a bool
        tensor, read by the training steps to skip it otherwise)."""
        return ops.equal(
            ops.mod(self.iterations, self.hessian_update_interval), 0
        )

    @contextlib.contextmanager
    def using_hessian(self, hessian_vector_products, trainable_variables):
        """Makes `apply` inside the block use these Hessian-vector products.

        For custom training loops: `hessian_vector_products[i]` is `H z`
        for the probe `z` of `trainable_variables[i]`, unscaled by any loss
        scale (on steps where `refreshes_hessian()` is false it is ignored
        and may be zeros). `keras_batchopt.curvature.rademacher_probes`
        gives the probes the training steps use.
        """
        if not self.built:
            self.build(trainable_variables)
        self._pending_hessian = {
            self._get_variable_index(v): hz
            for v, hz in zip(trainable_variables, hessian_vector_products)
        }
        try:
            yield self
        finally:
            self._pending_hessian = None

    def apply(self, grads, trainable_variables=None):
        if self._pending_hessian is None:
            raise ValueError(NOT_WIRED)
        if self.gradient_accumulation_steps:
            self._accumulate_hessian()
        return super().apply(grads, trainable_variables)

    def _accumulate_hessian(self):
        """Averages |Hz| over the micro-batches of one accumulated step."""
        steps = self.gradient_accumulation_steps
        boundary = ops.equal(ops.mod(self._iterations + 1, steps), 0)
        for i, hz in list(self._pending_hessian.items()):
            accumulator = self._hessian_accumulators[i]
            total = accumulator + ops.abs(ops.cast(hz, accumulator.dtype))
            self.assign(
                accumulator, ops.where(boundary, ops.zeros_like(total), total)
            )
            self._pending_hessian[i] = total / steps

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        g = ops.cast(gradient, dtype)
        i = self._get_variable_index(variable)
        if self._pending_hessian is None or i not in self._pending_hessian:
            raise ValueError(NOT_WIRED)
        hz = ops.cast(self._pending_hessian[i], dtype)
        d = averaging.average_blocks(ops.abs(hz), self._averaging_axes[i])
        m = self._momentums[i]
        v = self._hessian_averages[i]
        self.assign_add(m, ops.multiply(ops.subtract(g, m), 1 - self.beta_1))
        refresh = self.refreshes_hessian()
        old_v = ops.convert_to_tensor(v)
        new_v = ops.where(
            refresh,
            old_v * self.beta_2 + ops.square(d) * (1 - self.beta_2),
            old_v,
        )
        self.assign(v, new_v)
        t = self.iterations + 1
        refreshes = ops.floor_divide(
            self.iterations, self.hessian_update_interval
        )
        correction_1 = bias_correction(self.beta_1, t, dtype)
        correction_2 = bias_correction(self.beta_2, refreshes + 1, dtype)
        denom = ops.sqrt(new_v) / ops.sqrt(correction_2)
        if self.hessian_power != 1.0:
            denom = ops.power(denom, self.hessian_power)
        denom = denom + self.epsilon
        step = (m / correction_1) / denom
        if self._decays(variable):
            step = step + variable * ops.cast(self.weight_decay, dtype)
        self.assign_sub(variable, lr * step)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "hessian_power": self.hessian_power,
                "hessian_averaging": self.hessian_averaging,
                "hessian_update_interval": self.hessian_update_interval,
                "seed": self.seed,
            }
        )
        return config
