"""Gradients as they are: this backend has no sparse gradients."""


def densify(values):
    """`values` unchanged; every gradient of this backend is dense."""
    return values
