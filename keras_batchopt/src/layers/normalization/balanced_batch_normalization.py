"""AdaB2N: batch normalization balanced over the tasks of continual
learning."""

from keras import initializers
from keras import ops

from keras_batchopt.src import validation
from keras_batchopt.src.api_export import keras_batchopt_export
from keras_batchopt.src.layers.normalization import statistics
from keras_batchopt.src.layers.normalization.base import ChannelNormalization


def sample_weights(task_ids, task_weight, current_task, num_tasks):
    """The weight `s_i = pi_t / n_t` of each sample of task `t`.

    `pi = c / sum(c)` with the concentration `c_k = exp(w_k) + n_k` of
    each task `k <= current_task` (0 for later tasks), `n_k` the number
    of samples of task `k` in the batch. A task seen before but absent
    from the batch keeps its share of `sum(c)`, so the weights then sum
    to less than 1, as in the official code. Ids outside
    `[0, current_task]` weigh 0. At task 0 every sample counts as task 0:
    weights `1 / batch`, plain batch statistics.
    """
    ids = ops.reshape(ops.cast(task_ids, "int32"), (-1,))
    ids = ops.where(current_task > 0, ids, 0)
    one_hot = ops.one_hot(ids, num_tasks, dtype=task_weight.dtype)
    counts = ops.sum(one_hot, 0)
    seen = ops.arange(num_tasks) <= current_task
    concentration = ops.where(seen, ops.exp(task_weight) + counts, 0.0)
    share = concentration / ops.sum(concentration)
    sample_share = ops.sum(one_hot * share, 1)
    sample_count = ops.sum(one_hot * counts, 1)
    return sample_share / ops.maximum(sample_count, 1.0)


def moments(x, axis, weights):
    """Per-channel mean and biased variance of `x` (shape `(channels,)`):
    over the batch and positions when `weights` is None, else per sample
    over its positions and then `statistics.sample_weighted_moments`."""
    rank = len(x.shape)
    if weights is None:
        axes = statistics.reduction_axes(rank, axis, keep=())
        mean, variance, _ = statistics.weighted_moments(x, None, axes)
    else:
        axes = statistics.reduction_axes(rank, axis)
        if axes:
            means, variances, _ = statistics.weighted_moments(x, None, axes)
        else:  # one value per sample and channel
            means, variances = x, ops.zeros_like(x)
        mean, variance = statistics.sample_weighted_moments(
            means, variances, weights
        )
    return ops.reshape(mean, (-1,)), ops.reshape(variance, (-1,))


@keras_batchopt_export("keras_batchopt.layers.BalancedBatchNormalization")
class BalancedBatchNormalization(ChannelNormalization):
    """AdaB2N: batch normalization that balances the tasks of continual
    learning in its batch statistics and adapts its running statistics
    (Lyu et al., 2023).

    In continual learning a model meets tasks one after the other (new
    classes each time), with at most a small replay buffer of old
    samples. Batch normalization then normalizes with statistics of
    mostly the current task, and its running statistics (momentum 0.9 in
    Keras's convention: a weight of 0.9^50 < 0.01 after 50 steps) forget
    the old tasks within one task: a "recency bias" of normalization.
    AdaB2N changes three things:

    1. Balanced batch statistics (training). Each sample carries its
       task id `t_i`. For the tasks `k <= current_task`, with `n_k`
       samples in the batch and a learned weight `w_k`
       (`task_weight`, initially 0):

       ```
       c_k = exp(w_k) + n_k        pi_k = c_k / sum_j c_j
       s_i = pi_{t_i} / n_{t_i}
       mean = sum_i s_i * mean_positions(x_i)
       var = sum_i s_i * mean_positions((x_i - mean)^2)
       ```

       (the posterior mean of a Dirichlet-multinomial over the tasks).
       At task 0, or when called without task ids, these are the plain
       batch mean and biased variance.
    2. Adaptive momentum. With `m = 1 - momentum` (PyTorch's momentum),
       the running statistics move by `eta` per training batch,
       `running <- running + eta * (batch - running)` (the biased
       variance too), with `eta = m` for `kappa = 1`, the cumulative
       average `eta = 1 / step` for `kappa = 0`, and otherwise
       `eta_1 = m^kappa`, `eta_t = eta_{t-1} / (eta_{t-1} +
       (1 - m)^kappa)`, which falls towards `1 - (1 - m)^kappa`: a
       longer memory than BN's.
    3. A regularizer `regularization * (mse(mean, running_mean) +
       mse(var, running_var))` with the running statistics just updated
       (no gradient through them), added with `add_loss` from task
       `regularization_start_task` on. With the classification loss it
       trains `task_weight` (and pulls the batch statistics of the
       layers below towards the running ones).

    In inference the layer is batch normalization with the running
    statistics (`moving_mean`, `moving_variance`).

    Task ids and `fit`: the layer cannot see the labels, so the task id
    of each sample is a second input, `layer(x, task_ids=t)`, an integer
    tensor of shape `(batch,)` or `(batch, 1)`; in class-incremental
    learning with classes in task order, `t = labels // classes_per_task`
    (what the official code computes). In a functional model the ids are
    a model input: `model.fit({"image": x, "task": t}, y)`. In inference
    they are not read (give zeros). Called without `task_ids` (for
    example in a `Sequential` model), the layer uses plain batch
    statistics and keeps the adaptive momentum and the regularizer.

    The learned `task_weight` exists only in a layer built with task ids
    (first called with `task_ids`, or `build(inputs_shape,
    task_ids_shape)`).

    Tasks: `current_task` is an int32 variable (0 at first); advance it
    with `set_current_task` between calls to `fit`, when a new task
    starts. It, the step counter `step` and the last `eta` are saved
    with the model, so that training resumes with the same next step.

    Args:
        num_tasks: the number of tasks, an integer >= 1 (the size of
            `task_weight`).
        kappa: in [0, 1], the adaptation of the momentum: 1 is BN's
            fixed momentum, 0 the cumulative average. Defaults to `1.0`,
            the official module's default (the paper's grid: 0.1, 0.4,
            0.7, 1.0).
        regularization: the weight `lambda >= 0` of the regularizer; 0
            adds none. Defaults to `0.1` (the paper's grid: 0.01 to 10
            on CIFAR, 1e-5 to 1e-2 on Mini-ImageNet).
        regularization_start_task: an integer >= 0, the first task with
            the regularizer (the official `ada_t0`, 0 or 1). Defaults to
            `0`.
        axis: the channel axis, an int. `-1` (default) for channels_last,
            `1` for channels_first.
        momentum: in [0, 1), Keras's convention (the weight of the old
            running statistics): `m = 1 - momentum` above. Defaults to
            `0.9`, PyTorch's default `0.1` that the official code uses.
        epsilon: a float > 0 added to the variance. Defaults to `1e-3`,
            as in Keras (the official code: `1e-5`).
        task_weight_initializer: the initializer of `task_weight`.
            Defaults to `"zeros"`, as in the official code.
        center, scale, beta_initializer, gamma_initializer,
        moving_mean_initializer, moving_variance_initializer,
        beta_regularizer, gamma_regularizer, beta_constraint,
        gamma_constraint: as in `keras.layers.BatchNormalization`.
        **kwargs: other keyword arguments passed to `keras.layers.Layer`.

    Call arguments:
        inputs: a tensor of rank >= 2, batch first.
        task_ids: None, or the integer task id of each sample (shape
            `(batch,)` or `(batch, 1)`); read in training only.
        training: whether to use (and update) the batch statistics.

    Returns:
        A tensor of the shape of `inputs`, in the layer's compute dtype.

    Example:

    >>> import keras, numpy as np, keras_batchopt
    >>> images = keras.Input((8, 8, 1), name="image")
    >>> tasks = keras.Input((), dtype="int32", name="task")
    >>> h = keras.layers.Conv2D(4, 3)(images)
    >>> h = keras_batchopt.layers.BalancedBatchNormalization(num_tasks=2)(
    ...     h, task_ids=tasks)
    >>> h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h))
    >>> model = keras.Model([images, tasks], keras.layers.Dense(4)(h))
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> x = np.random.rand(16, 8, 8, 1).astype("float32")
    >>> y = np.arange(16) % 2  # task 0: classes 0 and 1
    >>> _ = model.fit({"image": x, "task": y // 2}, y, verbose=0)
    >>> _ = keras_batchopt.layers.set_current_task(model, 1)
    >>> y = np.arange(16) % 4  # task 1 (classes 2, 3) and replayed task 0
    >>> _ = model.fit({"image": x, "task": y // 2}, y, verbose=0)
    >>> model.predict({"image": x, "task": 0 * y}, verbose=0).shape
    (16, 4)

    Note:
        The official module replaces PyTorch's `BatchNorm2d` and gets the
        task ids through `set_counts` before each forward pass; here they
        are a call argument, any rank >= 2 and both layouts work, and
        task ids beyond `current_task` weigh 0 (the official code fails
        on them). The official `eta` of `0 < kappa < 1` is a Python
        attribute, lost when a run is saved; here it is a variable. The
        official regularizer is summed over the layers and multiplied by
        `lambda` in the training loop; each layer here adds its own term
        times `regularization`: the same sum. The classification loss
        also reaches `task_weight` through the batch statistics, as in
        the official code.

    References:
        - Lyu, Wang, Zhang, Sun, Su, Zhu and Jing, 2023, [Overcoming
          Recency Bias of Normalization Statistics in Continual Learning:
          Balance and Adaptation](https://arxiv.org/abs/2310.08855)
          (NeurIPS 2023).
        - Official code: `models/utils/adab2n.py` of
          https://github.com/lvyilin/AdaB2N (commit 9aaba7e).
    """

    def __init__(
        self,
        num_tasks,
        kappa=1.0,
        regularization=0.1,
        regularization_start_task=0,
        axis=-1,
        momentum=0.9,
        epsilon=1e-3,
        task_weight_initializer="zeros",
        **kwargs,
    ):
        super().__init__(
            axis=axis, momentum=momentum, epsilon=epsilon, **kwargs
        )
        self.num_tasks = validation.check_positive_int("num_tasks", num_tasks)
        self.kappa = validation.check_in_interval(
            "kappa", kappa, 0.0, 1.0, True, True
        )
        self.regularization = validation.check_non_negative(
            "regularization", regularization
        )
        self.regularization_start_task = validation.check_non_negative_int(
            "regularization_start_task", regularization_start_task
        )
        self.task_weight_initializer = initializers.get(task_weight_initializer)

    def build(self, inputs_shape, task_ids_shape=None):
        channels = self.channels(inputs_shape)
        self.gamma, self.beta = self.build_affine(channels)
        self.build_moving_statistics(channels)
        # Without task ids nothing would train it (Keras warns of a
        # variable without gradient): only a layer built with them has it.
        self.task_weight = None
        if task_ids_shape is not None:
            self.task_weight = self.add_weight(
                shape=(self.num_tasks,),
                name="task_weight",
                initializer=self.task_weight_initializer,
                autocast=False,
            )
        self.current_task = self._scalar("current_task", "int32")
        self.step = self._scalar("step", "int32")
        self.eta = self._scalar("eta", "float32")

    def _scalar(self, name, dtype):
        return self.add_weight(
            shape=(),
            name=name,
            initializer="zeros",
            dtype=dtype,
            trainable=False,
            autocast=False,
        )

    def set_current_task(self, task):
        """Sets `current_task` to `task`, an integer in [0, num_tasks)."""
        task = validation.check_non_negative_int("task", task)
        if task >= self.num_tasks:
            validation.fail("task", f"in [0, {self.num_tasks})", task)
        self.current_task.assign(task)

    def next_eta(self):
        """Advances `step` and `eta` (see the class docstring); returns
        the new `eta`, a float32 scalar."""
        step = self.step + 1
        self.step.assign(step)
        m = 1.0 - self.momentum
        if self.kappa == 0.0:
            eta = 1.0 / ops.cast(step, "float32")
        elif self.kappa == 1.0:
            eta = ops.convert_to_tensor(m, "float32")
        else:
            last = self.eta
            later = last / (last + (1.0 - m) ** self.kappa)
            eta = ops.where(step == 1, m**self.kappa, later)
        self.eta.assign(eta)
        return eta

    def call(self, inputs, task_ids=None, training=None):
        x = statistics.upcast(inputs)
        axis = self.channel_axis(len(x.shape))
        if self.is_training(training):
            mean, variance = self._train_statistics(x, axis, task_ids)
        else:
            mean = ops.cast(self.moving_mean, x.dtype)
            variance = ops.cast(self.moving_variance, x.dtype)
        return self.batch_normalize(x, mean, variance, axis)

    def _train_statistics(self, x, axis, task_ids):
        """Batch moments; updates the running ones and adds the loss."""
        eta = self.next_eta()
        weights = None
        if task_ids is not None:
            if self.task_weight is None:
                raise ValueError(
                    f"{type(self).__name__} '{self.name}' was built without "
                    "`task_ids` and has no task weights; call it with "
                    "`task_ids` from its first call on (or build it with "
                    "`build(inputs_shape, task_ids_shape)`)."
                )
            weights = sample_weights(
                task_ids,
                ops.cast(self.task_weight, x.dtype),
                self.current_task,
                self.num_tasks,
            )
        mean, variance = moments(x, axis, weights)
        old = 1.0 - eta
        statistics.moving_average(
            self.moving_mean, ops.stop_gradient(mean), old
        )
        statistics.moving_average(
            self.moving_variance, ops.stop_gradient(variance), old
        )
        if self.regularization > 0:
            self.add_loss(self._regularizer(mean, variance))
        return mean, variance

    def _regularizer(self, mean, variance):
        """`regularization * (mse(mean, moving_mean) + mse(variance,
        moving_variance))` from `regularization_start_task` on, float32."""
        mean = ops.cast(mean, "float32")
        variance = ops.cast(variance, "float32")
        moving_mean = ops.stop_gradient(ops.convert_to_tensor(self.moving_mean))
        moving_variance = ops.stop_gradient(
            ops.convert_to_tensor(self.moving_variance)
        )
        loss = ops.mean(ops.square(mean - moving_mean)) + ops.mean(
            ops.square(variance - moving_variance)
        )
        active = self.current_task >= self.regularization_start_task
        return ops.where(active, self.regularization * loss, 0.0)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_tasks": self.num_tasks,
                "kappa": self.kappa,
                "regularization": self.regularization,
                "regularization_start_task": self.regularization_start_task,
                "task_weight_initializer": initializers.serialize(
                    self.task_weight_initializer
                ),
            }
        )
        return config


@keras_batchopt_export("keras_batchopt.layers.set_current_task")
def set_current_task(model, task):
    """Sets the current task of every `BalancedBatchNormalization` layer of
    `model` (nested models included); call it between calls to `fit`,
    when training on task `task` starts.

    Args:
        model: a Keras model or layer.
        task: the task about to be trained, an integer in
            `[0, num_tasks)` of each layer.

    Returns:
        The number of layers set.

    Example:

    >>> import keras, keras_batchopt
    >>> model = keras.Sequential([keras.Input((3,)),
    ...     keras_batchopt.layers.BalancedBatchNormalization(num_tasks=5)])
    >>> keras_batchopt.layers.set_current_task(model, 2)
    1

    References:
        - Lyu et al., 2023, [Overcoming Recency Bias of Normalization
          Statistics in Continual Learning](
          https://arxiv.org/abs/2310.08855) (`end_task` of the official
          code: https://github.com/lvyilin/AdaB2N).
    """
    layers = [
        layer
        for layer in model._flatten_layers(include_self=True)
        if isinstance(layer, BalancedBatchNormalization)
    ]
    for layer in layers:
        layer.set_current_task(task)
    return len(layers)
