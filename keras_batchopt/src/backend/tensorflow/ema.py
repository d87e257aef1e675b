"""Keras's TensorFlow overwrite of the model variables by their moving
averages, skipping the variables that have none."""

import keras


def overwrite_with_averages(optimizer, trainable_variables):
    """Assigns each variable its moving average on every replica.

    Keras (>= 3.10) keeps no average for `overwrite_with_gradient`
    variables (None in the list), and its TensorFlow override of this step
    (Keras 3.15) does not skip them; the generic one does.
    """
    averages = optimizer._model_variables_moving_average
    for variable, average in zip(trainable_variables, averages):
        if average is None:
            continue
        if isinstance(variable, keras.Variable):
            variable = variable.value
        optimizer._distribution_strategy.extended.update(
            variable, lambda a, b: a.assign(b), args=(average,)
        )
