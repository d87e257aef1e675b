"""ConAdv: adversarial examples from the previous step's weights."""

import types

import keras
from keras import ops
from keras import tree

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.backend import dispatch
from keras_batchopt.src.strategies import batch_data


class StaleWeights(keras.metrics.Metric):
    """`theta_{t-1}`: a copy of the trainable weights one step behind.

    Held as metric variables: the JAX trainer threads metric variables
    through its compiled step like the weights, and Keras saves them
    with neither the weights nor the optimizer. The metric reports
    nothing and `reset_state` (called by `fit` at each epoch) keeps it.
    """

    def __init__(self, variables, name="conadv_stale_weights"):
        super().__init__(name=name)
        self.values = [
            self.add_variable(
                shape=tuple(v.shape),
                initializer="zeros",
                dtype=v.dtype,
                name=f"stale_{i}",
            )
            for i, v in enumerate(variables)
        ]
        # 0 until the first step: then theta_{-1} := theta_0.
        self.filled = self.add_variable(
            shape=(), initializer="zeros", dtype="float32", name="filled"
        )

    def update_state(self, *args, **kwargs):
        pass

    def reset_state(self):
        pass

    def result(self):
        return {}

    def forget(self):
        """The next step uses the current weights (as at step 0)."""
        self.filled.assign(0.0)


class ConcurrentAdversarial:
    """The settings and the stale weights of one model's ConAdv step."""

    def __init__(self, model, epsilon, clean_weight, adversarial_weight):
        self.epsilon = epsilon
        self.clean_weight = clean_weight
        self.adversarial_weight = adversarial_weight
        self.stale = StaleWeights(model.trainable_variables)

    def perturb(self, x, gradients):
        """`x + epsilon * sign(g)`: one signed-gradient (FGSM) step."""
        return tree.map_structure(
            lambda t, g: ops.stop_gradient(
                t + ops.cast(self.epsilon * ops.sign(g), t.dtype)
            ),
            x,
            gradients,
        )

    def combine(self, x, x_adv, y, sample_weight):
        """The doubled batch whose mean loss is
        `clean_weight * L(x) + adversarial_weight * L(x_adv)`."""
        # Keras's default reduction divides by the 2N rows: hence the 2.
        weights = batch_data.doubled_weights(
            x,
            sample_weight,
            2.0 * self.clean_weight,
            2.0 * self.adversarial_weight,
        )
        return keras.utils.pack_x_y_sample_weight(
            batch_data.stack_twice(x, x_adv),
            batch_data.stack_twice(y, y),
            weights,
        )


def float_inputs(x):
    """The inputs, cast to floats where they are not (pixels as uint8)."""
    floatx = keras.backend.floatx()

    def as_float(t):
        t = ops.convert_to_tensor(t)
        if "float" in keras.backend.standardize_dtype(t.dtype):
            return t
        return ops.cast(t, floatx)

    return tree.map_structure(as_float, x)


def _stateful_step(model, base, conadv, data):
    """TensorFlow and torch: the stale weights are variables, assigned."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    x = float_inputs(x)
    stale = conadv.stale
    filled = stale.filled > 0
    values = [
        ops.where(filled, s.value, v.value)
        for s, v in zip(stale.values, model.trainable_variables)
    ]
    gradients = dispatch.backend_module("adversarial").input_gradients(
        model, x, y, sample_weight, values
    )
    x_adv = conadv.perturb(x, gradients)
    # theta_{t-1} for the next step is this step's theta_t.
    for s, v in zip(stale.values, model.trainable_variables):
        s.assign(v.value)
    stale.filled.assign(1.0)
    return base(conadv.combine(x, x_adv, y, sample_weight))


def _train_step(model, base, conadv, *args):
    backend = dispatch.backend_module("adversarial")
    if hasattr(backend, "train_step"):
        return backend.train_step(model, base, conadv, *args)
    return _stateful_step(model, base, conadv, *args)


@keras_batchopt_export(
    "keras_batchopt.strategies.enable_concurrent_adversarial_training"
)
def enable_concurrent_adversarial_training(
    model, epsilon=1.0 / 255.0, clean_weight=1.0, adversarial_weight=1.0
):
    """Gives a model the ConAdv training step, in place.

    Concurrent adversarial learning (ConAdv) trains on each batch and on
    an adversarial copy of it, generated with the weights of the
    previous step, so that in a distributed setting the input gradient
    for batch `t` can run alongside the weight gradient of step `t-1`
    instead of before it. At step `t`, with `theta_{t-1}` held in
    non-trainable snapshot variables (`theta_{-1} = theta_0`):

        x_adv = x + epsilon * sign(grad_x L(theta_{t-1}; x, y))
        g = grad_theta [clean_weight * L(theta_t; x, y)
                        + adversarial_weight * L(theta_t; x_adv, y)]

    and the model's optimizer applies `g` (so LARS, LAMB, warmup
    schedules, loss scaling and gradient clipping apply as usual). The
    clean and adversarial copies go through the model as one batch of
    `2N` rows; the input gradient is taken in training mode, and the
    layer state it would change (batch-normalization moving statistics,
    seed generators) is left as it was. After this call,
    `model.fit` runs the ConAdv step on every backend; `evaluate` and
    `predict` are unchanged, and the training metrics cover both copies.

    Args:
        model: a built `keras.Model` with a differentiable loss of
            floating inputs.
        epsilon: the perturbation size in input units, >= 0 (default
            `1/255`: one pixel level for inputs scaled to [0, 1]).
        clean_weight: weight of the clean loss, >= 0 (paper: 1).
        adversarial_weight: weight of the adversarial loss, >= 0 (paper:
            1).

    Returns:
        The same model.

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> strategies = keras_batchopt.strategies
    >>> model = strategies.enable_concurrent_adversarial_training(
    ...     model, epsilon=0.01
    ... )
    >>> model.compile(
    ...     keras_batchopt.optimizers.Lars(0.1),
    ...     keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ... )
    >>> x, y = np.random.rand(32, 4), np.random.randint(0, 2, 32)
    >>> history = model.fit(x, y, batch_size=16, verbose=0)

    References:
        - [Liu, Chen, Cheng, Hsieh and You, 2022](
          https://arxiv.org/abs/2106.00221), Concurrent Adversarial
          Learning for Large-Batch Training (ICLR 2022), the ConAdv
          algorithm with staleness `tau = 1`.
        - [Goodfellow, Shlens and Szegedy, 2015](
          https://arxiv.org/abs/1412.6572), the signed-gradient step.

    Note:
        No official code was found; this follows the paper's algorithm
        with one signed-gradient step and equal weights. The paper, like
        AdvProp, can route adversarial examples through separate
        batch-normalization layers; here both copies share the model's
        normalization layers (batch statistics over the `2N` rows). The
        stale weights are not saved: after `keras.models.load_model`, call
        this function again, and the first step then uses the current
        weights as `theta_{t-1}` (as at step 0). The weighting assumes
        Keras's default `"sum_over_batch_size"` loss reduction.
    """
    epsilon = validation.check_non_negative("epsilon", epsilon)
    clean_weight = validation.check_non_negative("clean_weight", clean_weight)
    adversarial_weight = validation.check_non_negative(
        "adversarial_weight", adversarial_weight
    )
    if not model.built or not model.trainable_variables:
        raise ValueError(
            "Argument `model` must be a built model with trainable "
            f"weights (call it once on data first). Received: model={model}"
        )
    previous = getattr(model, "_concurrent_adversarial", None)
    if previous is None:
        conadv = ConcurrentAdversarial(
            model, epsilon, clean_weight, adversarial_weight
        )
        base = type(model).train_step.__get__(model)
    else:
        conadv = previous
        conadv.epsilon = epsilon
        conadv.clean_weight = clean_weight
        conadv.adversarial_weight = adversarial_weight
        conadv.stale.forget()
        base = model._concurrent_adversarial_base
    # Tracked as a metric of the model (see `StaleWeights`).
    model._concurrent_adversarial_stale = conadv.stale
    model._concurrent_adversarial = conadv
    model._concurrent_adversarial_base = base

    def train_step(self, *args):
        return _train_step(self, base, conadv, *args)

    model.train_step = types.MethodType(train_step, model)
    model.train_function = None
    return model
