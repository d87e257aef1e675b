"""The one place that turns Keras's current backend into a module of ours.

Generic code never branches on the backend name: it asks for
`backend_module("<name>")` and calls what that module defines, and each
backend folder (`keras_batchopt/src/backend/<backend>/`) gives the module,
or leaves it out where `required=False` lets the caller fall back to its
generic code. Modules are imported on first use (so no framework but the
selected one is ever imported); Python's `sys.modules` keeps them.
"""

import importlib

import keras

PACKAGE = "keras_batchopt.src.backend"


def backend_name():
    """The name of Keras's current backend (`keras.backend.backend()`)."""
    return keras.backend.backend()


def module_path(name, backend=None):
    """The dotted path of backend module `name`.

    Args:
        name: a module path relative to the backend's folder, such as
            `"curvature"` or `"optimizers.torch_adan"`.
        backend: a backend name; defaults to the current one.

    Returns:
        `"keras_batchopt.src.backend.<backend>.<name>"`.
    """
    return f"{PACKAGE}.{backend or backend_name()}.{name}"


def backend_module(name, required=True):
    """The current backend's module `name`, imported on first use.

    Args:
        name: a module path relative to the backend's folder, such as
            `"curvature"` or `"optimizers.torch_adan"`.
        required: when False, a backend without such a module gives None
            (the caller then runs its generic code); when True it raises.

    Returns:
        The module `keras_batchopt.src.backend.<backend>.<name>`, or None.

    Raises:
        NotImplementedError: the module is required and the current
            backend has none.

    Example:

    >>> from keras_batchopt.src.backend import dispatch
    >>> dispatch.backend_module("custom_gradient").__name__.split(".")[-1]
    'custom_gradient'
    >>> dispatch.backend_module("no_such_module", required=False) is None
    True
    """
    path = module_path(name)
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as error:
        # Only the absence of the module itself (or of a parent package of
        # ours) means "no such module"; a missing framework or a broken
        # import inside an existing module is raised as it is.
        missing = error.name or ""
        if not (path == missing or path.startswith(missing + ".")):
            raise
        if not missing.startswith(PACKAGE + "."):
            raise
        if required:
            raise NotImplementedError(
                f"keras_batchopt has no `{name}` module for the "
                f"{backend_name()!r} backend (looked for `{path}`)."
            ) from error
        return None
