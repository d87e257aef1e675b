"""Lower-case string names for our optimizers, as Keras has for its own.

After `import keras_batchopt`, `model.compile(optimizer="adan")` and
`keras.optimizers.get("adan")` build `keras_batchopt.optimizers.Adan()`
with its defaults, as `optimizer="adam"` builds Keras's Adam.

`keras.optimizers.get(name)` deserializes `{"class_name": name}`, and
Keras's deserialization looks the name up in the global custom objects
(`keras.saving.get_custom_objects()`, public API) before its own
optimizers, so a name entered there would shadow a Keras optimizer of the
same name. Hence three rules:

- a name Keras's own optimizers answer to (the lower-cased name of a
  public class of `keras.optimizers`) is never entered: `"lamb"` stays
  Keras's, and ours is `"keras_batchopt>Lamb"`, the name it is registered
  and saved under;
- a name already in the custom objects (the user's) is not overwritten;
- only snake_case names are entered, never a class name: a user's own
  class of the same name (say an unregistered `Adan`, saved under
  `"Adan"` and loaded with `custom_objects={"Adan": ...}`) would lose to a
  global entry, since Keras merges the global ones over the user's.

Serialization is unchanged: Keras names a registered class by its
registered name (`"keras_batchopt>Adan"`), which is not affected here.
"""

import keras

from keras_batchopt.src.optimizers.ada_hessian import AdaHessian
from keras_batchopt.src.optimizers.adagrad_norm import AdaGradNorm
from keras_batchopt.src.optimizers.adan import Adan
from keras_batchopt.src.optimizers.lars import Lars
from keras_batchopt.src.optimizers.sgd_sai import SGDSaI
from keras_batchopt.src.optimizers.sink_gd import SinkGD


def string_names():
    """The string name of each optimizer that has one, to its class.

    `Lamb` has none of its own: `"lamb"` is Keras's name (see the module
    docstring); use `"keras_batchopt>Lamb"`. `NormalizeAndProject` has none:
    it wraps another optimizer.
    """
    return {
        "ada_hessian": AdaHessian,
        "adagrad_norm": AdaGradNorm,
        "adan": Adan,
        "lars": Lars,
        "sgd_sai": SGDSaI,
        "sink_gd": SinkGD,
    }


def keras_optimizer_names():
    """The names Keras's own optimizers answer to in
    `keras.optimizers.get`: the lower-cased names of the public classes of
    `keras.optimizers` (Keras builds its table the same way)."""
    return {
        name.lower()
        for name in dir(keras.optimizers)
        if isinstance(getattr(keras.optimizers, name), type)
    }


def register_string_names():
    """Enters the names of `string_names()` into Keras's global custom
    objects, except those Keras's optimizers answer to and those already
    there. Called once at `import keras_batchopt`; calling it again changes
    nothing.

    Returns:
        The names entered by this call, sorted.
    """
    custom_objects = keras.saving.get_custom_objects()
    taken = keras_optimizer_names()
    entered = []
    for name, cls in string_names().items():
        if name in taken or name in custom_objects:
            continue
        custom_objects[name] = cls
        entered.append(name)
    return sorted(entered)
