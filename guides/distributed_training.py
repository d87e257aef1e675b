"""
Title: Data-parallel training: the same weights on one device and on eight
Author: keras-batchopt team
Date created: 2026/12/06
Last modified: 2026/12/06
Description: LAMB and synchronized ghost batch normalization on 1 vs 8 devices.
Accelerator: None
"""

"""
## Setup

This guide trains one small CNN twice, on one device and data-parallel on
several, and checks that both give the same weights. On JAX it uses
`keras.distribution.DataParallel`, on TensorFlow
`tf.distribute.MirroredStrategy`; Keras has no distribution API for
PyTorch, so there the guide runs the one-device part only.

```shell
KERAS_BACKEND=jax python distributed_training.py
KERAS_BACKEND=tensorflow python distributed_training.py
```

Without accelerators, the guide makes virtual devices out of the CPU: 8 on
JAX, 2 on TensorFlow. Both must be set up before the framework starts,
which is why the code below does it before the first import of Keras.
The full guide takes about 40 seconds per backend on two shared CPU
cores (20 to 22 s of CPU time); `KERAS_BATCHOPT_GUIDE_QUICK=1` trains 8
steps on a small subset (about 15 s of CPU time), and the test suite runs
the guide that way.
"""

import os
import time

# JAX fixes its number of CPU devices when it starts. XLA_FLAGS only
# affects the CPU platform: on a GPU or TPU host, JAX still lists the
# accelerators. A reader's own XLA_FLAGS are left alone.
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
if BACKEND == "jax" and "XLA_FLAGS" not in os.environ:
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

if BACKEND == "tensorflow":
    import tensorflow as tf

    # Two logical devices on the CPU, set before TensorFlow runs any op
    # (afterwards the device list can no longer change).
    if not tf.config.list_physical_devices("GPU"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_batchopt import layers  # noqa: E402
from keras_batchopt import optimizers  # noqa: E402

# The data loader of the package's `compare` job.
from keras_batchopt.src.compare.data import load_dataset  # noqa: E402

QUICK = os.environ.get("KERAS_BATCHOPT_GUIDE_QUICK") == "1"
print("Keras", keras.__version__, "on backend:", keras.backend.backend())

# The global batch; every replica gets an equal share of it.
BATCH_SIZE = 64
EPOCHS = 2 if QUICK else 6
data = load_dataset(
    "auto",
    train_size=4 * BATCH_SIZE if QUICK else 32 * BATCH_SIZE,
    test_size=256 if QUICK else 2048,
)


def as_images(x):
    """28 x 28 x 1 images. scikit-learn's 8 x 8 digits, the loader's
    fallback when Fashion-MNIST is not installed, are upsampled to 24 x 24
    and padded."""
    if x.shape[1] != 28:
        x = np.pad(np.kron(x, np.ones((1, 3, 3), x.dtype)), [(0, 0), (2, 2), (2, 2)])
    return x[..., None].astype("float32")


# Shuffled once here, then trained in this order (`shuffle=False`), so that
# every run sees the same batches. Whole batches only: a last, partial batch
# would not split evenly over the devices.
order = np.random.default_rng(0).permutation(len(data.x_train))
steps = len(order) // BATCH_SIZE
order = order[: steps * BATCH_SIZE]
x_train, y_train = as_images(data.x_train)[order], data.y_train[order]
x_test, y_test = as_images(data.x_test), data.y_test
print(data.name, x_train.shape, x_test.shape)

"""
## Introduction

In data-parallel training every device holds a copy of the model and
takes a slice of the global batch; the gradients are averaged across the
devices before the update, so the update is the one of the global batch
on a single device. Two things in a model can break that equality:

- **Batch statistics.** A normalization layer that computes its moments
  on each device's slice normalizes by statistics of a smaller batch.
  The package's batch-statistics layers take `synchronized=True`, as
  `keras.layers.BatchNormalization` does: under a `tf.distribute`
  strategy their moments are all-reduced across the replicas
  (`PowerNormalization` and `UnifiedNormalization` also all-reduce the
  batch averages of their custom backward passes). Under
  `keras.distribution` on JAX, a jitted step sees each sharded batch as
  one global array and reduces over all of it, synchronized or not.
  For `GhostBatchNormalization` each ghost batch is still normalized by
  its own moments; here the ghost batches (8 samples) never straddle two
  devices, so they are the same ghost batches as on one device.
- **Per-variable norms.** LAMB scales each variable's update by a trust
  ratio `||w|| / ||update||`. The norms must be those of the whole
  variable, not of one device's copy of a shard. With data parallelism
  each device holds the whole variable, and under JAX's `ModelParallel`
  XLA adds the collectives itself; the package's tests check both.

The model: a convolution, a synchronized ghost batch normalization, and
a dense classifier, trained with `keras_batchopt.optimizers.Lamb`.
"""

SYNCHRONIZED = BACKEND != "torch"  # `True` raises on torch: no distribution


def make_model(synchronized=SYNCHRONIZED):
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(16, 3, use_bias=False)(inputs)
    x = layers.GhostBatchNormalization(
        virtual_batch_size=8, momentum=0.9, synchronized=synchronized
    )(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.MaxPooling2D(4)(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10)(x)
    return keras.Model(inputs, outputs)


keras.utils.set_random_seed(0)
initial_weights = make_model().get_weights()


class Snapshots(keras.callbacks.Callback):
    """The weights (moving statistics included) at the end of each epoch."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([np.asarray(w) for w in self.model.get_weights()])


def train(synchronized=SYNCHRONIZED, weights=None):
    """Builds, compiles and trains the model from `weights` (default
    `initial_weights`) in the current distribution scope; returns the
    weights after each epoch and the epoch losses."""
    model = make_model(synchronized)
    model.set_weights(initial_weights if weights is None else weights)
    model.compile(
        optimizer=optimizers.Lamb(learning_rate=0.01, weight_decay=0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    snapshots = Snapshots()
    start = time.time()
    history = model.fit(
        x_train,
        y_train,
        batch_size=BATCH_SIZE,
        epochs=EPOCHS,
        shuffle=False,
        callbacks=[snapshots],
        verbose=0,
    )
    _, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    losses = np.array(history.history["loss"])
    print(
        f"  losses {np.round(losses, 4)}  test accuracy {accuracy:.4f}  "
        f"{time.time() - start:.1f} s"
    )
    return snapshots.weights, losses


def max_relative_difference(weights, reference):
    """The largest `max|a - b| / max|b|` over the arrays, the denominator
    floored at 0.01 so that an array near zero is compared absolutely."""
    worst = 0.0
    for a, b in zip(weights, reference):
        scale = max(float(np.max(np.abs(b))), 0.01)
        worst = max(worst, float(np.max(np.abs(a - b))) / scale)
    return worst


"""
## One device

Without a distribution, Keras places the model and the batch on one
device (the first of the eight virtual ones on JAX).
"""

print("One device:")
one_weights, one_losses = train()

"""
## Several devices

On JAX, `keras.distribution.DataParallel` replicates the variables on
every device and shards each batch along its first axis; `fit` needs no
other change. On TensorFlow, the model is built and compiled inside
`MirroredStrategy.scope()`, and `fit` splits each global batch of 64 into
one half per replica.
"""


def make_distribution():
    """A `keras.distribution` on JAX, a `tf.distribute` strategy on
    TensorFlow (both have `scope()`), and the number of devices; None on
    torch. One strategy serves every run: two strategies over the same
    devices would share the keys of their collective operations."""
    if BACKEND == "jax":
        devices = keras.distribution.list_devices()
        return keras.distribution.DataParallel(devices=devices), len(devices)
    if BACKEND == "tensorflow":
        if tf.config.list_logical_devices("GPU"):
            strategy = tf.distribute.MirroredStrategy()  # every GPU
        else:
            cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
            strategy = tf.distribute.MirroredStrategy(cpus)
        return strategy, strategy.num_replicas_in_sync
    return None, 1


distribution, replicas = make_distribution()
if distribution is None:
    print(
        "Keras has no distribution API for the torch backend: only the "
        "one-device run above. Use the JAX or TensorFlow backend for "
        "data-parallel training with Keras."
    )
else:
    print(f"Data-parallel on {replicas} devices:")
    with distribution.scope():
        many_weights, many_losses = train()


def report(label, weights, losses):
    """The max relative difference to the one-device run, epoch by epoch."""
    print(label)
    for epoch, (w, loss) in enumerate(zip(weights, losses)):
        print(
            f"  epoch {epoch + 1} ({(epoch + 1) * steps:3d} steps): weights "
            f"{max_relative_difference(w, one_weights[epoch]):.2e}  loss "
            f"{abs(loss - one_losses[epoch]) / abs(one_losses[epoch]):.2e}"
        )


if distribution is not None:
    report(
        f"{replicas} devices vs one, max relative difference:",
        many_weights,
        many_losses,
    )

"""
How close is close? A data-parallel step sums the gradients in another
order than one device, so the two runs differ by float32 rounding after
the first step, and training carries such differences along and can
amplify them. For scale, the same one-device run again, with every
initial weight moved by one float32 step (`np.nextafter`):
"""

print("One device, initial weights moved by one float32 step:")
nudged = [np.nextafter(w, np.float32(np.inf)) for w in initial_weights]
nudged_weights, nudged_losses = train(weights=nudged)
report("nudged vs one, max relative difference:", nudged_weights, nudged_losses)

"""
The data-parallel check can also fail. Under `MirroredStrategy`, the same
model with `synchronized=False` normalizes each ghost batch by its own
moments as before, but each replica updates the moving statistics from
its own ghost batches, not from all of them in order as one device does:
"""

if BACKEND == "tensorflow":
    print(f"Data-parallel on {replicas} devices, synchronized=False:")
    with distribution.scope():
        local_weights, local_losses = train(synchronized=False)
    report(
        "synchronized=False vs one, max relative difference:",
        local_weights,
        local_losses,
    )

"""
## What it shows

One run of the full guide (2,048 Fashion-MNIST training images, global
batch 64, 6 epochs of 32 steps) on each backend, on a shared machine with
two CPU cores; the max relative difference of the weights (moving
statistics included) to the one-device run after each epoch:

| after | JAX, 8 | JAX, nudged | TF, 2 | TF, nudged | TF, 2, not synced |
|---|---|---|---|---|---|
| 32 steps | 1.1e-6 | 3.6e-7 | 8.4e-6 | 8.9e-5 | 2.8e-2 |
| 64 steps | 1.8e-6 | 4.4e-7 | 5.8e-6 | 7.1e-5 | 2.8e-2 |
| 96 steps | 1.9e-6 | 8.2e-7 | 4.8e-6 | 2.5e-3 | 2.7e-2 |
| 128 steps | 3.4e-6 | 1.2e-6 | 6.5e-6 | 1.5e-2 | 2.7e-2 |
| 160 steps | 4.3e-5 | 1.2e-2 | 6.9e-6 | 4.0e-2 | 2.8e-2 |
| 192 steps | 4.8e-5 | 6.9e-2 | 4.5e-3 | 1.0e-1 | 2.7e-2 |

("JAX, 8" and "TF, 2": data-parallel on 8 and 2 devices; "nudged": one
device, every initial weight moved by one float32 step; "not synced":
`synchronized=False`.)
The epoch losses of the data-parallel runs equal those of one device to
at most 3.5e-7 (relative) on JAX and 2.5e-7 on TensorFlow through epoch
5 (1.2e-4 on TensorFlow in epoch 6); the test accuracies (0.7808 on
JAX, 0.7998 on TensorFlow) are the same. The JAX and TensorFlow runs
start from other initial weights (each backend draws its own), so compare
within a backend only. In quick mode
(8 steps) the differences are 5.0e-7 on JAX and 1.9e-6 on TensorFlow.

Three things to read from it:

- Data-parallel training computes the one-device update: for 128 steps
  and more the weights agree to within 1e-5 (1.1e-6 to 8.4e-6), the size
  of float32 rounding in sums over a batch.
- Over a longer run any rounding difference can grow, and here it
  does: moving every initial weight by one float32 step drifts further
  from the reference than the data-parallel run (from 160 steps on with
  JAX, from the first epoch with TensorFlow). The
  late jump (4.8e-5 on JAX, 4.5e-3 on TensorFlow at 192 steps) fits this
  growth rather than a mismatch in the update: a LAMB step at learning rate
  0.01 over ghost batches of 8 is noisy, and nearby trajectories part.
  Compare distributed and single-device code over a few steps, as the
  package's tests do (20 steps, relative tolerance 1e-5).
- `synchronized=False` under `MirroredStrategy` gives the same losses
  (each ghost batch is normalized by its own moments either way) but
  moving statistics 2.7e-2 off from the first epoch on, those that
  inference uses: synchronize the batch-statistics layers under a
  `tf.distribute` strategy. Under JAX's `keras.distribution` the result
  is the same either way (the jitted step sees the global batch; the
  package's tests check it), so the flag makes one model that is right
  under both.

The data-parallel runs are not faster here: the "devices" are virtual
ones sharing two CPU cores.

## On a real multi-device host

The same script uses the accelerators when there are any: on JAX,
`keras.distribution.list_devices()` returns every GPU or TPU core, and
`DataParallel(devices=...)` spreads the batch over all of them; on
TensorFlow, `MirroredStrategy()` without arguments mirrors over every
GPU. For a TPU with TensorFlow, build and compile the model under a
`TPUStrategy` instead:

```python
resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
tf.config.experimental_connect_to_cluster(resolver)
tf.tpu.experimental.initialize_tpu_system(resolver)
strategy = tf.distribute.TPUStrategy(resolver)
with strategy.scope():
    model = make_model()
    model.compile(...)
model.fit(...)
```

With JAX, a TPU host should need nothing more than the guide's code (we
have not run it on one):

```shell
KERAS_BACKEND=jax python distributed_training.py
```

The global batch must divide by the number of devices. On GPUs the
reductions (cuDNN convolutions, all-reduces) are not in a fixed order, so
expect differences near the float32 rounding of the sums rather than the
CPU's; we have measured only the CPU runs above. Scale the global batch
with the device count and, for large batches, use a layer-wise optimizer
such as LAMB or LARS with a warmup (see the large-batch training guide).

## What the package's tests check

`tests/distribution/` runs on virtual CPU devices, each framework in its
own interpreter, and compares the weights with one device after 20 steps
of `fit` (relative tolerance 1e-5; 3e-5 for AdaHessian, whose
Hessian-vector products are sums of both signs):

| setting | optimizers (all) | batch-statistics layers |
|---|---|---|
| JAX `DataParallel`, 8 devices | equal one device | - |
| JAX `ModelParallel`, 2 x 4 mesh | equal one device, slots sharded (a) | - |
| JAX `DataParallel`, 2 devices | - | equal one device, (b) |
| TF `MirroredStrategy`, 2 CPUs | equal one device (c) | equal one device (d) |
| torch | no distribution | `synchronized=True` raises |

(a) The convolution and both Dense kernels are sharded over the "model"
axis, and every optimizer slot has the sharding of its variable.
(b) With `synchronized` True or False: the jitted step reduces over the
global batch. (c) The optimizers' TensorFlow XLA fast path stands aside
under a strategy. (d) With `synchronized=True`, both replicas' copies of
the layer's state included; with `False` the test checks that the
weights differ.

The optimizers are AdaHessian, Adan (also with a global-norm clip), LAMB,
LARS (Nesterov, LARC, sum of norms), SGD-SAI, AdaGradNorm and SinkGD. The
layers are `GhostBatchNormalization`, `BatchChannelNormalization`,
`InstanceBatchNormalization`, `RepBatchNormalization`, `ProgressiveRepBN`,
`AlphaBatchNormalization`, `RegionNormalization`, `PowerNormalization` and
`UnifiedNormalization` (the last two also on padded, masked token
sequences; their state set in the backward pass is compared too).
"""
