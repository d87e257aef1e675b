import re

import keras
from keras.src.saving import serialization_lib

from keras_batchopt.src.api_export import keras_batchopt_export

# Keras's names of a normalization layer's scale and offset.
SCALE_NAME = "gamma"
OFFSET_NAME = "beta"
# An initial norm not yet recorded.
UNSET = -1.0


def _leaf_and_parent(variable):
    path = getattr(variable, "path", None) or variable.name
    parent, _, leaf = path.rpartition("/")
    return parent, leaf


def projection_groups(variables, include=(), exclude=()):
    """Positions in `variables` of the tensors NaP projects, in groups
    whose joint norm is held fixed.

    Each kernel (a variable named `kernel` of rank >= 2: the weights of
    `Dense`, `EinsumDense` and convolution layers) is its own group. A
    normalization layer's `gamma` and `beta` (same parent path) form one
    group; a `gamma` alone is a group of one. Variables whose path matches a
    regular expression of `exclude` are left out; a variable whose path
    matches one of `include` is projected on its own. Everything else
    (biases, embeddings, other variables) is not projected.
    """
    groups = []
    scales = {}
    offsets = {}
    for i, variable in enumerate(variables):
        path = getattr(variable, "path", None) or variable.name
        if any(re.search(pattern, path) for pattern in exclude):
            continue
        parent, leaf = _leaf_and_parent(variable)
        if any(re.search(pattern, path) for pattern in include):
            groups.append([i])
        elif leaf == "kernel" and len(variable.shape) >= 2:
            groups.append([i])
        elif leaf == SCALE_NAME:
            scales[parent] = i
        elif leaf == OFFSET_NAME:
            offsets[parent] = i
    for parent, i in scales.items():
        group = [i]
        if parent in offsets:
            group.append(offsets[parent])
        groups.append(group)
    return sorted(groups)


def _squared_norm(tensors):
    total = 0.0
    for t in tensors:
        t = keras.ops.cast(t, "float32")
        total = total + keras.ops.sum(keras.ops.square(t))
    return total


@keras_batchopt_export("keras_batchopt.optimizers.NormalizeAndProject")
class NormalizeAndProject(keras.optimizers.Optimizer):
    """Normalize-and-Project (NaP): after every step of an inner optimizer,
    scales each layer's weights back to their initial norm.

    In a network with a normalization layer before every nonlinearity, the
    output does not depend on the scale of the weights feeding a
    normalization, so the growth of their norm during training only lowers
    the effective learning rate (about `lr / ||W||^2`). NaP fixes the norms,
    which keeps the effective learning rate equal to the schedule. After
    each update of the inner optimizer:

    ```
    W_l <- W_l * ||W_l(0)|| / ||W_l||          for every projected group l
    ```

    with `||.||` the Frobenius norm of the group and `W_l(0)` its value when
    the optimizer is built (the norm is held in a variable, so it is saved
    and restored with the optimizer). The groups (see `projection_groups`):
    each kernel of rank >= 2 (`Dense`, `EinsumDense`, convolutions) on its
    own, per layer; each normalization layer's scale and offset (`gamma`,
    `beta`) jointly. Biases, embeddings and other variables are left
    alone, as are variables whose path matches a pattern of `exclude`
    (for instance the output layer, whose kernel feeds no normalization).

    Everything else is the inner optimizer's: learning rate, weight decay,
    clipping, EMA (which averages the projected weights), gradient
    accumulation (which projects only when the inner optimizer steps),
    `iterations`. It works with Keras's optimizers and ours, inside
    `keras.optimizers.LossScaleOptimizer`, with `jit_compile` and JAX's
    stateless training, and is saved and loaded with the model (no
    `custom_objects`).

    Args:
        optimizer: the inner `keras.optimizers.Optimizer` (not a
            `LossScaleOptimizer`: wrap NaP in one instead).
        include: regular expressions; a variable whose path matches one
            is also projected, on its own (weights of custom layers).
            Defaults to none.
        exclude: regular expressions; variables whose path matches one are
            not projected (this wins over `include`). Defaults to none.
        name: the optimizer's name; `None` (default) numbers it as Keras
            does (`normalize_and_project`, `normalize_and_project_1`, ...).

    Example:
    >>> import keras, keras_batchopt
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(16, use_bias=False),
    ...     keras.layers.LayerNormalization(),
    ...     keras.layers.Activation("relu"),
    ...     keras.layers.Dense(3, name="head"),
    ... ])
    >>> optimizer = keras_batchopt.optimizers.NormalizeAndProject(
    ...     keras.optimizers.Adam(1e-3), exclude=["head"])
    >>> model.compile(optimizer=optimizer, loss="mse")

    References:
        - Lyle, Zheng, Khetarpal, Martens, van Hasselt, Pascanu and Dabney,
          2024, [Normalization and effective learning rates in
          reinforcement learning](https://arxiv.org/abs/2407.01800)
          (NeurIPS 2024)

    Note:
        No official code was published. The paper projects per layer;
        scale and offset are projected jointly to their initial norm
        (`sqrt(units)` for Keras's `gamma = 1`, `beta = 0`), as one public
        NaP port in Flax does. The paper inserts the normalization layers;
        this optimizer only projects, so build the model with them. Keras
        only knows the model's variables, not which of them feed a
        normalization: the choice is by name, and `exclude` takes out
        kernels that are not scale-invariant.
    """

    def __init__(
        self, optimizer, include=None, exclude=None, name=None, **kwargs
    ):
        if not isinstance(optimizer, keras.optimizers.Optimizer) or (
            isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        ):
            raise ValueError(
                "Argument `optimizer` must be a keras.optimizers.Optimizer "
                "other than a LossScaleOptimizer (wrap NormalizeAndProject "
                f"in the LossScaleOptimizer instead). Received: "
                f"optimizer={optimizer!r}"
            )
        if kwargs:
            raise ValueError(
                "NormalizeAndProject takes no optimizer arguments: set "
                f"them on the inner optimizer. Received: {sorted(kwargs)}"
            )
        super().__init__(learning_rate=0.0, name=name)
        self.inner_optimizer = optimizer
        self.include = list(include or [])
        self.exclude = list(exclude or [])
        self._groups = []
        self._initial_norms = []

    # ---------------------------------------------------------------- build

    def build(self, var_list):
        if self.built:
            return
        self.inner_optimizer.build(var_list)
        super().build(var_list)
        self._groups = projection_groups(var_list, self.include, self.exclude)
        for k in range(len(self._groups)):
            # Filled with the weights' norm on the first `apply` (a norm
            # can not be computed where TensorFlow builds the optimizer:
            # inside the traced train step).
            self._initial_norms.append(
                self.add_variable(
                    shape=(),
                    initializer=keras.initializers.Constant(UNSET),
                    dtype="float32",
                    name=f"initial_norm_{k}",
                )
            )

    @property
    def variables(self):
        return self._variables + self.inner_optimizer.variables

    # ---------------------------------------------------------------- steps

    def apply(self, grads, trainable_variables=None):
        if not self.built:
            variables = trainable_variables
            with keras.name_scope(self.name, caller=self):
                self.build(variables)
            self.built = True
        self._record_initial_norms()
        inner = self.inner_optimizer
        update = type(inner)._backend_update_step

        def update_and_project(grads, variables, learning_rate):
            update(inner, grads, variables, learning_rate)
            self._project(variables)

        # The inner optimizer's own `apply` runs (clipping, accumulation,
        # weight decay, EMA, iterations); only its update step, which it
        # calls once per real step and before EMA, is followed by the
        # projection.
        inner._backend_update_step = update_and_project
        try:
            return inner.apply(grads, trainable_variables)
        finally:
            del inner._backend_update_step

    def _record_initial_norms(self):
        """Sets each unset initial norm to its group's current norm."""
        variables = self._trainable_variables
        for group, initial in zip(self._groups, self._initial_norms):
            norm = keras.ops.sqrt(_squared_norm([variables[i] for i in group]))
            value = initial.value
            initial.assign(keras.ops.where(value < 0, norm, value))

    def _project(self, variables):
        by_position = {self._get_variable_index(v): v for v in variables}
        for group, initial in zip(self._groups, self._initial_norms):
            members = [by_position.get(i) for i in group]
            if any(v is None for v in members):
                continue
            initial = initial.value
            norm = keras.ops.sqrt(_squared_norm(members))
            # A group that starts (or becomes) all zeros is left alone.
            factor = keras.ops.where(
                (norm > 0) & (initial > 0),
                initial / keras.ops.maximum(norm, 1e-30),
                1.0,
            )
            for v in members:
                v.assign(v * keras.ops.cast(factor, v.dtype))

    # ------------------------------------------------- the inner optimizer's

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.inner_optimizer.learning_rate = learning_rate

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    def scale_loss(self, loss):
        return self.inner_optimizer.scale_loss(loss)

    def finalize_variable_values(self, var_list):
        self.inner_optimizer.finalize_variable_values(var_list)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        self.inner_optimizer.exclude_from_weight_decay(
            var_list=var_list, var_names=var_names
        )

    def _use_weight_decay(self, variable):
        return self.inner_optimizer._use_weight_decay(variable)

    def _decays(self, variable):
        inner = self.inner_optimizer
        if hasattr(inner, "_decays"):
            return inner._decays(variable)
        return bool(inner.weight_decay) and inner._use_weight_decay(variable)

    # --------------------------------------------------------------- config

    def get_config(self):
        return {
            "name": self.name,
            "optimizer": serialization_lib.serialize_keras_object(
                self.inner_optimizer
            ),
            "include": list(self.include),
            "exclude": list(self.exclude),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        optimizer = serialization_lib.deserialize_keras_object(
            config.pop("optimizer"), custom_objects=custom_objects
        )
        return cls(optimizer, **config)
