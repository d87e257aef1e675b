"""Optimizer slot helpers shared by several optimizers."""


def scalar_slot_name(variable, suffix):
    """The name `add_variable_from_reference` would give, for a scalar."""
    if hasattr(variable, "path"):
        return f"{variable.path.replace('/', '_')}_{suffix}"
    return f"{str(variable.name).replace('/', '_').replace(':', '_')}_{suffix}"
