import keras

from keras_batchopt.src import config
from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.backend import dispatch


def dense_gradients(grads):
    """`grads` with every sparse gradient made dense (None kept), by the
    backend's `sparse.densify` (TensorFlow's `tf.IndexedSlices`, from
    embedding lookups; the other backends' gradients are all dense)."""
    return dispatch.backend_module("sparse").densify(grads)


@keras_batchopt_export("keras_batchopt.optimizers.BatchOptimizer")
class BatchOptimizer(keras.optimizers.Optimizer):
    """Base class of every keras_batchopt optimizer.

    It is a plain `keras.optimizers.Optimizer`: subclasses implement
    `build()`, `update_step()` in `keras.ops` and `get_config()`, and every
    Keras feature (clipping, EMA, gradient accumulation, loss scaling,
    `jit_compile`, JAX stateless training, `tf.distribute`) works as for
    Keras's own optimizers. What it adds:

    - **One place that touches Keras's private hook.** This class holds the
      package's only override of `_backend_update_step`, the collective
      update that Keras calls once per step with all gradients. If Keras
      renames the hook, this file is the one to change.
    - **Backend fast paths.** A subclass names, per backend, a module with
      a multi-tensor implementation in `_fast_path_modules` (its path under
      `keras_batchopt/src/backend/<backend>/`, loaded by
      `dispatch.backend_module`). The module
      exposes `can_use(optimizer, grads, variables)` and
      `update_step(optimizer, grads, variables, learning_rate)`. The fast
      path runs when `keras_batchopt.config.fast_paths_enabled()` is true
      and `can_use` accepts the inputs; otherwise the generic per-variable
      `update_step` runs. Both must give the same numbers, and a test
      checks it for every fast path.
    - **Whole-step gradient transforms.** `_transform_gradients()` sees all
      gradients at once (for global-norm clipping and the like) before the
      generic per-variable loop. Under a `tf.distribute` strategy with
      several replicas it sees the all-reduced gradients (the backend's
      `distribute.transformed_update_step` sums them first, then runs
      Keras's per-variable distributed update, which also touches Keras's
      private `_distributed_tf_update_step`). Without a strategy, the
      TensorFlow generic update runs the per-variable loop itself: Keras's
      one-replica all-reduce (a `tf.custom_gradient`) would keep every
      traced training step alive in TensorFlow's gradient registry.
    - **Weight decay inside the step.** A subclass whose algorithm places
      the decay itself (Adan's proximal step, LAMB's and LARS's trust
      ratios) sets `_decay_in_update_step = True`, which turns off Keras's
      generic decoupled pre-step decay, and asks `_decays(variable)`
      whether a variable is decayed (`weight_decay > 0` and not excluded by
      `exclude_from_weight_decay()`).
    - **EMA leaves backward-pass state alone.** With `use_ema=True`, the
      `overwrite_with_gradient` variables (the state the backward passes
      of `PowerNormalization`, `UnifiedNormalization` and
      `ProgressiveRepBN` set) are neither averaged nor overwritten by
      their average, on every supported Keras: Keras < 3.10 averages them
      (`ProgressiveRepBN`'s update counter then falls back to about 1 at
      the end of `fit`), and Keras 3.15's own TensorFlow overwrite fails
      on the `None` averages later versions keep for them.
    - **Dense gradients.** `apply()` makes every sparse gradient dense
      before Keras sees it (on TensorFlow, the `tf.IndexedSlices` that an
      `Embedding` table gets), so loss-scale unscaling, Keras's clipping
      and gradient accumulation, `_transform_gradients()`, the fast paths
      and `update_step()` all see dense tensors, as in the official
      PyTorch implementations, which have no sparse path. The cost: each
      step materializes a dense gradient the size of the whole embedding
      table (memory and a pass over it), and the step then updates every
      row, also rows the batch did not look up; under `tf.distribute` the
      gradient is all-reduced dense. Other backends already give dense
      gradients.
    - **Weight-decay exclusions are saved.** `exclude_from_weight_decay()`
      is recorded in `get_config()` (`decay_exclusions`), so a reloaded
      model decays the same variables; Keras's own optimizers forget them.

    Args:
        learning_rate: a float >= 0, a
            `keras.optimizers.schedules.LearningRateSchedule`, or a callable
            that takes no arguments and returns the value.
        decay_exclusions: what `exclude_from_weight_decay()` was given, as
            saved by `get_config()`: `None` or a dict with `var_names`
            (patterns) and `var_indices` (positions in the variable list
            the optimizer is built with). Set it through
            `exclude_from_weight_decay()` rather than by hand.
        **kwargs: the arguments of `keras.optimizers.Optimizer` (`name`,
            `weight_decay`, `clipnorm`, `clipvalue`, `global_clipnorm`,
            `use_ema`, `ema_momentum`, `ema_overwrite_frequency`,
            `loss_scale_factor`, `gradient_accumulation_steps`).
    """

    # Backend name -> its fast-path module, relative to the backend's folder
    # (`keras_batchopt/src/backend/<backend>/`). Every optimizer inherits the
    # TensorFlow one (its own update, compiled by XLA).
    _fast_path_modules = {"tensorflow": "optimizers.xla_update"}

    # True when the algorithm applies `weight_decay` inside its own step.
    _decay_in_update_step = False

    def __init__(self, learning_rate, decay_exclusions=None, **kwargs):
        validation.check_learning_rate(learning_rate)
        if kwargs.get("weight_decay") is not None:
            validation.check_non_negative(
                "weight_decay", kwargs["weight_decay"]
            )
        super().__init__(learning_rate=learning_rate, **kwargs)
        self._decay_exclusions = {"var_names": [], "var_indices": []}
        if decay_exclusions:
            self._decay_exclusions = {
                key: list(decay_exclusions.get(key) or [])
                for key in self._decay_exclusions
            }
            names = self._decay_exclusions["var_names"]
            if names:
                super().exclude_from_weight_decay(var_names=names)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Excludes variables from weight decay; saved with the optimizer.

        As in Keras: call before the optimizer is built; `var_names` are
        regular expressions searched in variable names, `var_list` lists
        variables. Unlike Keras's own optimizers, which forget the
        exclusions on save, both are kept in `get_config()` (a variable of
        `var_list` by its position among the variables the optimizer is
        built with), so a model reloaded with `keras.models.load_model`
        goes on decaying the same variables.
        """
        super().exclude_from_weight_decay(
            var_list=var_list, var_names=var_names
        )
        self._decay_exclusions = {
            "var_names": list(var_names or []),
            "var_indices": [],
        }

    def get_config(self):
        config = super().get_config()
        exclusions = dict(self._decay_exclusions)
        # Keras's set of the keys of `var_list` (no variables are kept here:
        # the optimizer would track them as its own).
        keys = getattr(self, "_exclude_from_weight_decay", set())
        if self.built and keys:
            # By position: variable paths are not stable across save and
            # load on every backend.
            exclusions["var_indices"] = [
                i
                for i, v in enumerate(self._trainable_variables)
                if self._var_key(v) in keys
            ]
        config["decay_exclusions"] = (
            exclusions if any(exclusions.values()) else None
        )
        return config

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        indices = self._decay_exclusions["var_indices"]
        if indices:
            # Restored from a config: exclude the same positions again.
            self._exclude_from_weight_decay = set(
                getattr(self, "_exclude_from_weight_decay", set())
            ) | {
                self._var_key(var_list[i]) for i in indices if i < len(var_list)
            }
            self._exclude_from_weight_decay_cache = {}
        for variable in var_list:
            # Fill Keras's decay-exclusion cache while the variables still
            # carry their Keras names (TF's update_step sees tf.Variables).
            self._use_weight_decay(variable)

    def apply(self, grads, trainable_variables=None):
        # Densify first: Keras's loss-scale unscaling (`g / scale`) below
        # fails on a `tf.IndexedSlices`, and everything after it (clipping,
        # accumulation, our hooks) then sees dense gradients.
        return super().apply(dense_gradients(grads), trainable_variables)

    def _averaged(self, trainable_variables):
        """The (variable, moving average) pairs EMA covers: not the
        variables set through their gradient (`overwrite_with_gradient`)."""
        averages = self._model_variables_moving_average
        if len(trainable_variables) != len(averages):
            raise ValueError(
                "The optimizer's moving averages must match the model's "
                f"trainable variables ({len(trainable_variables)}). "
                f"Received: {len(averages)} averages"
            )
        return [
            (variable, average)
            for variable, average in zip(trainable_variables, averages)
            if average is not None
            and not getattr(variable, "overwrite_with_gradient", False)
        ]

    def _update_model_variables_moving_average(self, trainable_variables):
        if not self.use_ema:
            return
        not_first_step = keras.ops.not_equal(self.iterations, 0)
        for variable, average in self._averaged(trainable_variables):
            momentum = (
                keras.ops.cast(not_first_step, variable.dtype)
                * self.ema_momentum
            )
            average.assign(momentum * average + (1 - momentum) * variable)

    def _overwrite_model_variables_with_average_value(
        self, trainable_variables
    ):
        pairs = self._averaged(trainable_variables)
        ema = dispatch.backend_module("ema")
        ema.overwrite_with_averages(self, pairs)

    def _apply_weight_decay(self, variables):
        if self._decay_in_update_step:
            return
        super()._apply_weight_decay(variables)

    def _decays(self, variable):
        """Whether `variable` takes weight decay in this optimizer's step."""
        return (
            self.weight_decay is not None
            and self.weight_decay > 0
            and self._use_weight_decay(variable)
        )

    def _fast_path(self, grads, trainable_variables):
        """Returns the fast-path module that applies, or None."""
        if not config.fast_paths_enabled():
            return None
        name = self._fast_path_modules.get(dispatch.backend_name())
        if name is None:
            return None
        module = dispatch.backend_module(name)
        if not module.can_use(self, grads, trainable_variables):
            return None
        return module

    def _transform_gradients(self, grads, trainable_variables):
        """Whole-step gradient transform before the generic loop."""
        return grads

    def _update_structure(self):
        """What `update_step` decides per variable beyond its shape and
        `get_config()`, fixed at build time (hashable). Two optimizers
        whose update differs anywhere else must differ here; subclasses
        with more per-variable routing extend it."""
        return tuple(
            (self._decays(v), bool(getattr(v, "overwrite_with_gradient", 0)))
            for v in self._trainable_variables
        )

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        fast_path = self._fast_path(grads, trainable_variables)
        if fast_path is not None:
            fast_path.update_step(
                self, grads, trainable_variables, learning_rate
            )
            return
        distribute = dispatch.backend_module("distribute", required=False)
        if distribute is not None and distribute.replicas() > 1:
            # tf.distribute: the transform must see the summed gradients.
            distribute.transformed_update_step(
                self, grads, trainable_variables, learning_rate
            )
            return
        grads = self._transform_gradients(grads, trainable_variables)
        if distribute is not None and not distribute.has_strategy():
            # TensorFlow without a strategy: Keras's update less its
            # one-replica all-reduce, which keeps every traced step alive.
            distribute.update_without_strategy(
                self, grads, trainable_variables, learning_rate
            )
            return
        super()._backend_update_step(grads, trainable_variables, learning_rate)
