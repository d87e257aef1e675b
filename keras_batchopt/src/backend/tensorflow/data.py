"""`tf.data` pieces of the package's input pipelines."""

import tensorflow as tf


def dataset_from_generator(generator, example):
    """A `tf.data.Dataset` over ``generator()``, whose batch dimension is
    left open (``None``) so that the batch size may change between batches.

    ``example`` is a structure of NumPy arrays with the batches' structure,
    dtypes and trailing shapes.
    """
    import keras

    def spec(array):
        return tf.TensorSpec(
            (None,) + array.shape[1:], tf.as_dtype(array.dtype)
        )

    signature = keras.tree.map_structure(spec, example)
    dataset = tf.data.Dataset.from_generator(
        generator, output_signature=signature
    )
    options = tf.data.Options()
    options.experimental_optimization.inject_prefetch = False
    return dataset.with_options(options)
