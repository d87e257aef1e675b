"""The shared part of our in-memory training datasets (Keras adapters)."""

import keras
import numpy as np
from keras.src.trainers.data_adapters import data_adapter_utils
from keras.src.trainers.data_adapters.data_adapter import DataAdapter


class ArrayAdapter(DataAdapter):
    """A Keras `DataAdapter` over NumPy arrays whose batches come from
    `self._generate()` on every backend.

    Subclasses call `_set_arrays` in `__init__`, implement `_generate`,
    `_tf_example` (the structure `tf.data` takes its signature from) and
    `num_batches`, and pick their batches with `_pick`.
    """

    def _set_arrays(self, x, y, sample_weight):
        """Stores `x`, `y`, `sample_weight` as arrays; sets `num_samples`,
        their common first dimension."""
        if y is None and sample_weight is not None:
            raise ValueError(
                "Argument `sample_weight` needs targets `y`. Received: y=None"
            )
        as_array = lambda a: np.asarray(a)  # noqa: E731
        self._x = keras.tree.map_structure(as_array, x)
        self._y = None if y is None else keras.tree.map_structure(as_array, y)
        self._sample_weight = (
            None
            if sample_weight is None
            else keras.tree.map_structure(as_array, sample_weight)
        )
        sizes = {
            len(leaf)
            for s in (self._x, self._y, self._sample_weight)
            if s is not None
            for leaf in keras.tree.flatten(s)
        }
        if len(sizes) != 1:
            raise ValueError(
                "Argument `x` (with `y` and `sample_weight`) must hold "
                "arrays with the same first dimension. Received: first "
                f"dimensions={sorted(sizes)}"
            )
        self.num_samples = sizes.pop()

    def _pick(self, pick):
        """`(x, y, sample_weight)` (those given) with `pick` applied to
        every array."""
        batch = (keras.tree.map_structure(pick, self._x),)
        if self._y is not None:
            batch += (keras.tree.map_structure(pick, self._y),)
            if self._sample_weight is not None:
                batch += (keras.tree.map_structure(pick, self._sample_weight),)
        return batch

    # ------------------------------------------------------ DataAdapter API

    def get_numpy_iterator(self):
        return self._generate()

    def get_jax_iterator(self):
        return self._generate()

    def get_torch_dataloader(self):
        return data_adapter_utils.get_torch_dataloader(self._generate())

    def get_tf_dataset(self):
        from keras_batchopt.src.backend.tensorflow.data import (
            dataset_from_generator,
        )

        return dataset_from_generator(self._generate, self._tf_example())

    @property
    def has_partial_batch(self):
        return False

    @property
    def partial_batch_size(self):
        return None

    def on_epoch_begin(self):
        pass

    def on_epoch_end(self):
        pass
