"""The one export decorator: records the public path and registers the class.

Registration under the package name ``keras_batchopt`` is what lets
``keras.models.load_model`` rebuild our objects without ``custom_objects``.
"""

import keras

PACKAGE = "keras_batchopt"

# Public path -> object, filled at import time; read by tests/test_api.py.
REGISTRY = {}


def is_serializable(obj):
    """Functions and classes with `get_config` are registered with Keras;
    other public classes (a callback, a data adapter) are only recorded."""
    return not isinstance(obj, type) or hasattr(obj, "get_config")


def keras_batchopt_export(path):
    """Marks a class public under ``path`` and registers it with Keras.

    Args:
        path: the public dotted path, e.g. ``"keras_batchopt.optimizers.Adan"``.
    """

    def decorator(cls):
        if path in REGISTRY:
            raise ValueError(f"Duplicate public path {path!r}.")
        REGISTRY[path] = cls
        if not is_serializable(cls):
            return cls
        name = path.rsplit(".", 1)[-1]
        return keras.saving.register_keras_serializable(
            package=PACKAGE, name=name
        )(cls)

    return decorator
