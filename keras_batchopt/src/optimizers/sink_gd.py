import math
import re

from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.ops.bias_correction import bias_correction
from keras_batchopt.src.optimizers.batch_optimizer import BatchOptimizer

OUTPUT_SCALES = ("rms", "unit_frobenius")


def check_exclude_layers(value):
    """Validates `exclude_layers`; returns a list of regular expressions.

    `None` is the empty list and a single string a one-element list; every
    pattern must compile.
    """
    allowed = "None or a list of regular expressions (strings)"
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(p, str) for p in value
    ):
        validation.fail("exclude_layers", allowed, value)
    for pattern in value:
        try:
            re.compile(pattern)
        except re.error:
            valid = False
        else:
            valid = True
        if not valid:
            validation.fail("exclude_layers", allowed, value)
    return list(value)


@keras_batchopt_export("keras_batchopt.optimizers.SinkGD")
class SinkGD(BatchOptimizer):
    """SinkGD: stateless gradient descent by Sinkhorn normalization.

    Gradient multi-normalization (Scetbon, Ma, Gong and Meeds) in its
    SR-Sinkhorn form: the gradient of each weight matrix is normalized
    alternately by rows and by columns a few times and the result is the
    step. Matrices keep no optimizer state, so the memory is SGD's; as in
    the paper, embeddings, the output layer and every variable of rank <= 1
    (biases, normalization scales) are trained by an AdamW fallback, which
    is the only state the optimizer holds.

    Update rule for a weight `w` routed to SinkGD, with gradient `g`, seen
    as a matrix of `m = shape[-1]` rows (output units, the paper's rows of
    `W` in `y = W x`) and `n = prod(shape[:-1])` columns (the fan-in):

    ```
    x = float32(g)
    repeat num_iterations times:
        # every output unit: norm over all axes but the last -> sqrt(n)
        x = sqrt(n) * x / max(||x[..., j]||, sinkhorn_epsilon)
        # every fan-in entry: norm over the last axis -> sqrt(m)
        x = sqrt(m) * x / max(||x[i..., :]||, sinkhorn_epsilon)
    x = x / sqrt(m * n)                        # output_scale="unit_frobenius"
    w = w - learning_rate * (x + weight_decay * w)
    ```

    Update rule for a variable routed to AdamW, at step `t`, with
    `lr = learning_rate * adam_lr_ratio`:

    ```
    m = adam_beta_1 * m + (1 - adam_beta_1) * g
    v = adam_beta_2 * v + (1 - adam_beta_2) * g**2
    m_hat = m / (1 - adam_beta_1**t)
    v_hat = v / (1 - adam_beta_2**t)
    w = w - lr * (m_hat / (sqrt(v_hat) + epsilon) + weight_decay * w)
    ```

    Variables excluded with `exclude_from_weight_decay()` drop the
    `weight_decay * w` term in either route.

    Which route a variable takes, decided once in `build()` as in
    `keras.optimizers.Muon`:

    - rank <= 1 (scalars, biases, normalization scales and offsets): AdamW,
      always;
    - a path containing `"embedding"` (any case), when
      `exclude_embeddings=True`: AdamW;
    - a path in which a pattern of `exclude_layers` is found: AdamW;
    - every other variable (rank >= 2): SinkGD.

    There is no automatic rule for the output layer (nor has Muon one):
    **list your head layer in `exclude_layers`**, as the paper trains it
    with Adam, e.g. `exclude_layers=["predictions"]`.

    Args:
        learning_rate: a float >= 0, a
            `keras.optimizers.schedules.LearningRateSchedule`, or a callable
            with no arguments. Defaults to `0.001`. The SinkGD step has
            entries of RMS 1, the scale of Adam's step, so a learning rate
            that suits Adam is the place to start.
        num_iterations: `L`, the number of row-and-column normalization
            rounds, an integer >= 1. Defaults to `5` (the paper); `1` is
            cheaper at a small loss.
        sinkhorn_epsilon: a float > 0, the floor under every row and column
            norm (a zero row gives a zero step instead of a NaN). Defaults
            to `1e-8`, the clamp of the third-party ports; the paper has
            none.
        output_scale: `"rms"` (default; the paper, and the axolotl port):
            the step is `x` itself, of Frobenius norm `sqrt(m * n)`, RMS 1;
            or `"unit_frobenius"`: `x / sqrt(m * n)`, of Frobenius norm 1,
            as another port does, which shrinks the step of an `m x n`
            matrix by `sqrt(m * n)` (the learning rate must grow to match).
        weight_decay: a float >= 0, decoupled and scaled by each route's
            own learning rate (`learning_rate` for SinkGD,
            `learning_rate * adam_lr_ratio` for AdamW). Defaults to `0.0`.
            Exclude variables with `exclude_from_weight_decay()`.
        adam_beta_1: decay of AdamW's first moment, in [0, 1). Defaults to
            `0.9`.
        adam_beta_2: decay of AdamW's second moment, in [0, 1). Defaults to
            `0.999`.
        epsilon: a float > 0 added to AdamW's `sqrt(v_hat)`. Defaults to
            `1e-7` (Keras's Adam and Muon).
        adam_lr_ratio: a float >= 0, the AdamW learning rate divided by
            `learning_rate`. Defaults to `1.0` (Muon's default).
        exclude_layers: `None` (default) or a list of regular expressions
            searched in each variable's path (`variable.path`, such as
            `"sequential/predictions/kernel"`; a model reloaded with
            `load_model` drops the outer model's name, so name layers or
            variables, not the model); a matching variable is trained by
            AdamW. Put the output layer here.
        exclude_embeddings: whether variables whose path contains
            `"embedding"` (any case; Keras's `Embedding` layer names its
            table `embeddings`) are trained by AdamW. Defaults to `True`.
        **kwargs: the base optimizer arguments (`name`, `clipnorm`,
            `clipvalue`, `global_clipnorm`, `use_ema`, `ema_momentum`,
            `ema_overwrite_frequency`, `loss_scale_factor`,
            `gradient_accumulation_steps`).

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> model = keras.Sequential(
    ...     [
    ...         keras.Input((4,)),
    ...         keras.layers.Dense(8, activation="relu"),
    ...         keras.layers.Dense(1, name="head"),
    ...     ]
    ... )
    >>> model.compile(
    ...     optimizer=keras_batchopt.optimizers.SinkGD(
    ...         learning_rate=1e-3, weight_decay=0.01, exclude_layers=["head"]
    ...     ),
    ...     loss="mse",
    ... )
    >>> x, y = np.ones((8, 4)), np.zeros((8, 1))
    >>> history = model.fit(x, y, epochs=2, verbose=0)
    >>> len(model.optimizer.variables)  # iteration, lr, Adam's m and v x 3
    8

    References:
        - [Scetbon, Ma, Gong and Meeds, 2025](https://arxiv.org/abs/2502.06742),
          Gradient Multi-Normalization for Stateless and Scalable LLM
          Training (NeurIPS 2025), Algorithms 3 and 4 (SR-Sinkhorn).
        - `keras.optimizers.Muon`, whose argument names and AdamW routing
          this class follows.
        - No official code was published; third-party PyTorch ports
          (a standalone `sinkgd-pytorch` and an axolotl integration) were
          compared for the choices below.

    Note:
        - **Axes in Keras's layout.** A Keras `Dense` kernel is
          `(in, out)` and a convolution kernel `(..., in, out)`, the
          transpose of PyTorch's `(out, in, ...)`. The paper's rows are the
          output units of `W` in `y = W x`, so here the paper's row step
          normalizes, for each index of the **last** axis, the slice over
          all leading axes (folded together into the fan-in, as PyTorch's
          `weight.view(out, -1)` does), to norm `sqrt(fan_in)`; its column
          step normalizes, for each index of the leading axes, the slice
          along the last axis, to norm `sqrt(out)`. A Keras layer then
          takes the same step as the PyTorch layer it mirrors. The roles
          are symmetric only at the fixed point, so after a finite
          `num_iterations` swapping them gives a different step. Kernels
          with several output axes (`EinsumDense`, attention projections
          such as `(d_model, heads, head_dim)`) are folded the same way,
          all axes but the last as the fan-in: list them in
          `exclude_layers` if that is not what you want.
        - **Scale.** The default step (`"rms"`) is the paper's `X_L`, whose
          entries have RMS 1 like Adam's nearly sign-like step, so one
          learning rate serves both routes (`adam_lr_ratio=1`). The ports
          that use it set the SinkGD rate to about `0.05` times the Adam
          rate (`adam_lr_ratio=20` here; unverified against the paper's
          appendix). `"unit_frobenius"` divides by `sqrt(m * n)` to make
          the step's Frobenius norm 1.
        - **Epsilon.** The norms are floored at `sinkhorn_epsilon`
          (`max(norm, epsilon)`, the ports' clamp), not offset by it; the
          paper divides by the bare norm. Scaling the gradient by any
          positive factor leaves the SinkGD step unchanged, up to float
          rounding, while no norm falls under the floor.
        - **Precision.** The normalization runs in float32 whatever the
          variable's dtype; the step is cast back at the end.
        - **Weight decay** is decoupled (AdamW-style, as in the ports), on
          both routes, each scaled by its own learning rate; Muon instead
          scales both by the main learning rate and has a separate
          `adam_weight_decay`. The paper's setting is unclear.
        - **AdamW fallback.** PyTorch's epsilon placement,
          `m_hat / (sqrt(v_hat) + epsilon)` (Keras's Adam and Muon add
          epsilon to `sqrt(v)` before bias correction); with the default
          epsilon the two differ only while `v` is tiny.
        - **State.** Only AdamW-routed variables get slot variables (`m`
          and `v`); SinkGD-routed ones get none.
        - **Sparse gradients.** On TensorFlow an embedding's
          `tf.IndexedSlices` gradient is made dense before the step, by
          `BatchOptimizer` (a dense AdamW update, as PyTorch's `AdamW`
          does).
    """

    # TensorFlow: the inherited fast path (this generic step compiled by XLA
    # in graph-mode steps); torch: in-place updates from the scale vectors.
    _fast_path_modules = {
        **BatchOptimizer._fast_path_modules,
        "torch": "optimizers.torch_sink_gd",
    }
    _decay_in_update_step = True

    # How `scale_learning_rate(rule="auto")` scales it with the batch.
    batch_scaling_rule = "sqrt"

    def __init__(
        self,
        learning_rate=0.001,
        num_iterations=5,
        sinkhorn_epsilon=1e-8,
        output_scale="rms",
        weight_decay=0.0,
        adam_beta_1=0.9,
        adam_beta_2=0.999,
        epsilon=1e-7,
        adam_lr_ratio=1.0,
        exclude_layers=None,
        exclude_embeddings=True,
        name=None,
        **kwargs,
    ):
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            name=name,
            **kwargs,
        )
        self.num_iterations = validation.check_positive_int(
            "num_iterations", num_iterations
        )
        self.sinkhorn_epsilon = validation.check_positive(
            "sinkhorn_epsilon", sinkhorn_epsilon
        )
        self.output_scale = validation.check_one_of(
            "output_scale", output_scale, OUTPUT_SCALES
        )
        self.adam_beta_1 = validation.check_beta("adam_beta_1", adam_beta_1)
        self.adam_beta_2 = validation.check_beta("adam_beta_2", adam_beta_2)
        self.epsilon = validation.check_positive("epsilon", epsilon)
        self.adam_lr_ratio = validation.check_non_negative(
            "adam_lr_ratio", adam_lr_ratio
        )
        self.exclude_layers = check_exclude_layers(exclude_layers)
        self.exclude_embeddings = validation.check_bool(
            "exclude_embeddings", exclude_embeddings
        )

    def _should_use_adamw(self, variable):
        """Muon's routing rule: True when AdamW trains `variable`."""
        if len(variable.shape) <= 1:
            return True
        path = getattr(variable, "path", None) or variable.name
        if self.exclude_embeddings and "embedding" in path.lower():
            return True
        return any(re.search(p, path) for p in self.exclude_layers)

    def _update_structure(self):
        return (super()._update_structure(), self._uses_adamw)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        # Static per-variable routing, fixed at build time, where the
        # variables still carry their Keras paths (TF's update_step sees
        # tf.Variables).
        self._uses_adamw = tuple(self._should_use_adamw(v) for v in var_list)
        self._momentums = [None] * len(var_list)
        self._velocities = [None] * len(var_list)
        for i, variable in enumerate(var_list):
            if self._uses_adamw[i]:
                self._momentums[i] = self.add_variable_from_reference(
                    variable, "momentum"
                )
                self._velocities[i] = self.add_variable_from_reference(
                    variable, "velocity"
                )

    def _sinkhorn(self, gradient, shape):
        """SR-Sinkhorn of `gradient` (rank >= 2), in float32.

        The normalized gradient is `diag(r) G diag(c)` for the gradient `G`
        as a `(fan_in, fan_out)` matrix, so only the scale vectors `r` and
        `c` are iterated: each norm is a matrix-vector product with `G**2`
        (one read), and the full-size result is formed once at the end,
        instead of rescaling `G` after every half-iteration (faster with
        several iterations on JAX and torch; see benchmarks/README.md for
        where it is not). A norm of exactly 0
        (a zero row or column) leaves its scale unchanged: its entries stay
        0 whatever the scale, as in the explicit form, and the scale stays
        finite.
        """
        fan_out = shape[-1]
        fan_in = math.prod(shape[:-1])
        g = ops.reshape(ops.cast(gradient, "float32"), (fan_in, fan_out))
        squares = ops.square(g)
        rows = ops.ones((fan_in, 1), "float32")
        columns = ops.ones((1, fan_out), "float32")
        eps = self.sinkhorn_epsilon
        for _ in range(self.num_iterations):
            # Every output unit (a column of `g`) to norm sqrt(fan_in).
            norms = columns * ops.sqrt(
                ops.matmul(ops.transpose(ops.square(rows)), squares)
            )
            columns = columns * ops.where(
                norms > 0, math.sqrt(fan_in) / ops.maximum(norms, eps), 1.0
            )
            # Every fan-in entry (a row of `g`) to norm sqrt(fan_out).
            norms = rows * ops.sqrt(
                ops.matmul(squares, ops.transpose(ops.square(columns)))
            )
            rows = rows * ops.where(
                norms > 0, math.sqrt(fan_out) / ops.maximum(norms, eps), 1.0
            )
        if self.output_scale == "unit_frobenius":
            rows = rows / math.sqrt(fan_in * fan_out)
        return ops.reshape(rows * g * columns, shape)

    def _adam_direction(self, gradient, i, dtype):
        """AdamW's bias-corrected direction; updates the moments."""
        step = ops.cast(self.iterations + 1, dtype)
        m = self._momentums[i]
        v = self._velocities[i]
        new_m = ops.add(
            ops.multiply(m, self.adam_beta_1),
            gradient * (1.0 - self.adam_beta_1),
        )
        new_v = ops.add(
            ops.multiply(v, self.adam_beta_2),
            ops.square(gradient) * (1.0 - self.adam_beta_2),
        )
        self.assign(m, new_m)
        self.assign(v, new_v)
        m_hat = new_m / bias_correction(self.adam_beta_1, step, dtype)
        v_hat = new_v / bias_correction(self.adam_beta_2, step, dtype)
        return m_hat / (ops.sqrt(v_hat) + self.epsilon)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        i = self._get_variable_index(variable)
        lr = ops.cast(learning_rate, dtype)
        if self._uses_adamw[i]:
            lr = lr * self.adam_lr_ratio
            g = ops.cast(gradient, dtype)
            direction = self._adam_direction(g, i, dtype)
        else:
            shape = tuple(int(d) for d in variable.shape)
            direction = ops.cast(self._sinkhorn(gradient, shape), dtype)
        if self._decays(variable):
            direction = direction + variable * self.weight_decay
        self.assign_sub(variable, direction * lr)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_iterations": self.num_iterations,
                "sinkhorn_epsilon": self.sinkhorn_epsilon,
                "output_scale": self.output_scale,
                "adam_beta_1": self.adam_beta_1,
                "adam_beta_2": self.adam_beta_2,
                "epsilon": self.epsilon,
                "adam_lr_ratio": self.adam_lr_ratio,
                "exclude_layers": list(self.exclude_layers),
                "exclude_embeddings": self.exclude_embeddings,
            }
        )
        return config
