"""Keras's TensorFlow overwrite of the model variables by their moving
averages, on every replica."""

import keras


def overwrite_with_averages(optimizer, pairs):
    """Assigns each variable of `pairs` (variable, average) its average
    through the distribution strategy, as Keras's TensorFlow optimizer
    does, for the pairs `BatchOptimizer._averaged` keeps."""
    for variable, average in pairs:
        if isinstance(variable, keras.Variable):
            variable = variable.value
        optimizer._distribution_strategy.extended.update(
            variable, lambda a, b: a.assign(b), args=(average,)
        )
