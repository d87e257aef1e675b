"""The shared-classifier training step of BatchFormer."""

import types

import keras

from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.strategies import batch_data


def _duplicate_labels(data):
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
    if y is None:
        return data
    y = batch_data.stack_twice(y, y)
    if sample_weight is not None:
        sample_weight = batch_data.stack_twice(sample_weight, sample_weight)
    return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)


@keras_batchopt_export("keras_batchopt.strategies.enable_batchformer_training")
def enable_batchformer_training(model):
    """Gives a model with a `keras_batchopt.layers.BatchFormer` the
    shared-classifier training step, in place.

    In training, `BatchFormer` returns `2N` rows (the `N` original
    features, then the `N` features after attention across the batch),
    and the classifier after it sees both. This step duplicates the
    labels and sample weights of every batch (`concatenate([y, y])`), so
    the loss is the mean over both streams, as in the official code, and
    `model.fit` works unchanged. `evaluate` and `predict` are untouched
    (the layer is the identity in inference). Training metrics are
    computed over both streams. The step is set on this model object
    only and is not saved: call this function again on a model loaded
    with `keras.models.load_model` before resuming training.

    Args:
        model: a `keras.Model` whose output has the doubled batch in
            training (it contains a `BatchFormer`).

    Returns:
        The same model.

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> model = keras.Sequential([
    ...     keras.Input((8,)),
    ...     keras.layers.Dense(8, activation="relu"),
    ...     keras_batchopt.layers.BatchFormer(num_heads=2),
    ...     keras.layers.Dense(3),
    ... ])
    >>> model = keras_batchopt.strategies.enable_batchformer_training(model)
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> x, y = np.random.rand(16, 8), np.random.randint(0, 3, 16)
    >>> history = model.fit(x, y, batch_size=8, verbose=0)
    >>> model.predict(x, verbose=0).shape
    (16, 3)

    References:
        - [Hou, Yu and Tao, 2022](https://arxiv.org/abs/2203.01522),
          BatchFormer (CVPR 2022); official code
          https://github.com/zhihou7/BatchFormer (commit
          305efaa6c54a0cfd69c99a919e48deb9f84040d8), README
          `BatchFormer(x, y, encoder, is_training)`.
    """
    base = type(model).train_step.__get__(model)

    def train_step(self, *args):
        state, data = batch_data.train_step_data(args)
        return base(*state, _duplicate_labels(data))

    model.train_step = types.MethodType(train_step, model)
    model.train_function = None
    return model
