"""The overwrite of model variables by their moving averages."""


def overwrite_with_averages(optimizer, pairs):
    """Assigns each variable of `pairs` (variable, average) its average,
    for the pairs `BatchOptimizer._averaged` keeps."""
    del optimizer
    for variable, average in pairs:
        variable.assign(average)
