"""The training step that feeds Hessian-vector products to AdaHessian."""

import types

from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.backend import dispatch
from keras_batchopt.src.curvature.loss_scale import hessian_optimizer


def _train_step(model, base_train_step, *args):
    if hessian_optimizer(model.optimizer) is None:
        return base_train_step(*args)
    return dispatch.backend_module("curvature").train_step(model, *args)


@keras_batchopt_export("keras_batchopt.curvature.HessianTrainStep")
class HessianTrainStep:
    """Mixin: a Keras model whose `fit` feeds Hessian-vector products to a
    Hessian optimizer such as `keras_batchopt.optimizers.AdaHessian`.

    Put it first among the bases of a model subclass. With any other
    optimizer the model trains with Keras's own step, unchanged. The
    Hessian step is Keras's step of the backend (loss, metrics, loss
    scaling, regularization losses, `jit_compile`) with one
    Hessian-vector product `H z` added, for Rademacher probes `z` drawn
    from the optimizer's seed and step: forward-over-reverse
    (`jax.jvp` of `jax.grad`) on JAX, nested gradient tapes on
    TensorFlow, a double backward on torch. On steps where the optimizer
    re-uses its Hessian estimate (`hessian_update_interval > 1`) the
    product is skipped.

    Args:
        *args, **kwargs: those of the Keras model class it is mixed into.

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> class Net(keras_batchopt.curvature.HessianTrainStep, keras.Model):
    ...     def __init__(self, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.dense = keras.layers.Dense(1)
    ...     def call(self, x):
    ...         return self.dense(x)
    >>> model = Net()
    >>> model.compile(
    ...     optimizer=keras_batchopt.optimizers.AdaHessian(0.1), loss="mse"
    ... )
    >>> history = model.fit(np.ones((8, 4)), np.zeros((8, 1)), verbose=0)

    References:
        - [Yao et al., 2021](https://arxiv.org/abs/2006.00719), ADAHESSIAN.
    """

    def train_step(self, *args):
        return _train_step(self, super().train_step, *args)


@keras_batchopt_export("keras_batchopt.curvature.enable_hessian_training")
def enable_hessian_training(model):
    """Gives an existing Keras model the Hessian training step, in place.

    The one-line alternative to `HessianTrainStep` for `Sequential` and
    functional models: after it, `model.fit` with
    `keras_batchopt.optimizers.AdaHessian` (also inside a
    `LossScaleOptimizer`) computes one Hessian-vector product per step on
    every backend; with another optimizer the model trains as before. The
    step is set on this model object only and is not saved: call it again
    on a model loaded with `keras.models.load_model` before resuming.

    Args:
        model: a `keras.Model`.

    Returns:
        The same model.

    Example:

    >>> import keras, keras_batchopt
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> model = keras_batchopt.curvature.enable_hessian_training(model)

    References:
        - [Yao et al., 2021](https://arxiv.org/abs/2006.00719), ADAHESSIAN.
    """
    base = type(model).train_step.__get__(model)

    def train_step(self, *args):
        return _train_step(self, base, *args)

    model.train_step = types.MethodType(train_step, model)
    # A training function compiled before would keep Keras's step.
    model.train_function = None
    return model
