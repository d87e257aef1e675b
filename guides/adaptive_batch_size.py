"""
Title: Growing the batch size during training (AdAdaGrad)
Author: keras-batchopt team
Date created: 2026/11/22
Last modified: 2026/11/22
Description: Per-sample gradient statistics decide when to grow the batch.
Accelerator: None
"""

"""
## Setup

This guide runs unchanged on TensorFlow, JAX and PyTorch; pick the backend
with `KERAS_BACKEND` before starting Python:

```shell
KERAS_BACKEND=jax python adaptive_batch_size.py
```

The full run trains five small classifiers on Fashion-MNIST (the Debian
package `dataset-fashion-mnist`; scikit-learn's digits if it is missing) in
about three minutes on two CPU cores with JAX. `KERAS_BATCHOPT_GUIDE_QUICK=1`
runs a small subset; the test suite runs the guide that way. Figures are
saved under `img/adaptive_batch_size/`.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from keras_batchopt import batch_size as bs  # noqa: E402
from keras_batchopt import schedules  # noqa: E402

# The data loader of the package's `compare` job: Fashion-MNIST when it is
# installed, else scikit-learn's digits.
from keras_batchopt.src.compare.data import load_dataset  # noqa: E402

QUICK = os.environ.get("KERAS_BATCHOPT_GUIDE_QUICK") == "1"
IMAGES = (
    "guides/img/adaptive_batch_size"
    if os.path.isdir("guides")
    else "img/adaptive_batch_size"
)
os.makedirs(IMAGES, exist_ok=True)
print("Keras", keras.__version__, "on backend:", keras.backend.backend())

data = load_dataset(
    "auto",
    train_size=3000 if QUICK else 30000,
    test_size=1000 if QUICK else 10000,
)
x_train, y_train = data.x_train.reshape(len(data.x_train), -1), data.y_train
x_test, y_test = data.x_test.reshape(len(data.x_test), -1), data.y_test
print(data.name, x_train.shape, x_test.shape)
CLASSES = int(y_train.max()) + 1
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

"""
## Introduction

A small batch makes cheap, noisy steps; a large batch makes accurate,
expensive ones. Early in training the gradient is large compared with its
noise, so small batches waste nothing; later the signal shrinks and the
noise dominates. AdAdaGrad (Lau, Liu and Kolar, 2024) measures that
trade-off during training and grows the batch when the noise wins. From the
per-sample gradients `g_i` of a batch, with `m` their mean:

- the **norm test** (Byrd et al., 2012) asks for a batch large enough that
  the variance of the batch gradient is below `eta^2 ||m||^2`:
  `b >= sum_j Var_i(g_ij) / (eta^2 ||m||^2)`;
- the **inner-product test** (Bollapragada et al., 2018) only asks that the
  batch gradient be a descent direction often enough:
  `b >= Var_i(<g_i, m>) / (theta^2 ||m||^4)`;
- the **augmented** test adds an **orthogonality test** on the part of each
  `g_i` orthogonal to `m`.

The batch never shrinks and is capped; the learning rate can follow the
number of samples seen rather than steps.

## The statistics on one batch

`gradient_statistics` computes the four quantities the tests need from
per-sample gradients (`jax.vmap`, `torch.func.vmap` or `tf.vectorized_map`
under the hood; the model runs in inference mode so samples do not interact):
"""


def make_model():
    return keras.Sequential(
        [
            keras.Input((x_train.shape[1],)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )


keras.utils.set_random_seed(0)
model = make_model()
stats = bs.gradient_statistics(model, x_train[:128], y_train[:128], loss=LOSS)
for key, value in stats.items():
    print(f"{key:18s} {value:.5g}")
print("norm test (eta=0.1) asks for a batch of", bs.norm_test(stats, 0.1))
print(
    "inner-product test (theta=0.1) asks for",
    bs.inner_product_test(stats, 0.1),
)
print(
    "augmented test (theta=nu=0.1) asks for",
    bs.augmented_inner_product_test(stats, 0.1, 0.1),
)

"""
At initialization the gradient is large and consistent, so the tests ask
for small batches; they ask for more as training converges.

## Fixed batches against a growing batch

Every run below gets the same budget of training samples and the same
optimizer (AdaGrad, the method the paper's analysis covers, learning rate
0.05): a fixed batch of 32, a fixed batch of 512, and batches that start at
32 and grow by the norm test or the augmented inner-product test (capped at
1024, in multiples of 32 to keep the number of distinct shapes, and so of
recompilations, small). `AdaptiveBatchDataset` is what `fit` receives; the
`AdaptiveBatchSize` callback runs the test every `test_interval` steps on the
batch just trained on and stops training when the budget is spent
(`max_samples`). An epoch of an `AdaptiveBatchDataset` is a fixed number of
steps, so progress is counted in samples.
"""

BUDGET = 6_000 if QUICK else 300_000


class Curve(keras.callbacks.Callback):
    """Training loss and batch size against samples seen."""

    def on_train_begin(self, logs=None):
        self.samples, self.losses, self.sizes = [], [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_samples, self.epoch_total = 0, 0.0

    def on_train_batch_end(self, batch, logs=None):
        # `samples_seen` and `batch_size` are added by AdaptiveBatchSize.
        # Keras logs the epoch's running mean of the loss, weighted by batch
        # size; undo it to get this batch's loss.
        size = logs["batch_size"]
        self.epoch_samples += size
        total = float(logs["loss"]) * self.epoch_samples
        self.losses.append((total - self.epoch_total) / size)
        self.epoch_total = total
        self.samples.append(logs["samples_seen"])
        self.sizes.append(size)


def train(name, batch_size, test=None, learning_rate_schedule=None, **kw):
    keras.utils.set_random_seed(0)
    model = make_model()
    model.compile(optimizer=keras.optimizers.Adagrad(0.05), loss=LOSS, metrics=["acc"])
    dataset = bs.AdaptiveBatchDataset(
        x_train, y_train, batch_size=batch_size, max_batch_size=1024, seed=0
    )
    grow = bs.AdaptiveBatchSize(
        dataset,
        test=test or "norm",
        test_interval=20 if test else 10**9,
        max_test_batch_size=128,
        batch_size_multiple=32,
        max_samples=BUDGET,
        learning_rate_schedule=learning_rate_schedule,
        **kw,
    )
    curve = Curve()
    start = time.perf_counter()
    model.fit(dataset, epochs=10**6, callbacks=[grow, curve], verbose=0)
    seconds = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    steps = int(model.optimizer.iterations)
    print(
        f"{name:34s} steps {steps:5d}  final batch {dataset.batch_size:4d}  "
        f"test acc {accuracy:.4f}  test loss {loss:.4f}  {seconds:5.1f} s"
    )
    return dict(name=name, curve=curve, steps=steps, accuracy=accuracy)


results = [
    train("fixed batch 32", 32),
    train("fixed batch 512", 512),
    train("norm test, eta 0.5", 32, test="norm", eta=0.5),
    train(
        "augmented test, theta = nu = 0.5",
        32,
        test="augmented_inner_product",
        theta=0.5,
        nu=0.5,
    ),
]

"""
## A schedule by samples seen

With `learning_rate_schedule`, the callback sets the learning rate before
every step from `samples_seen / initial_batch_size`, the step count a run at
the initial batch size would have reached. A schedule written for the
fixed-batch run keeps its pace per sample when the batch grows. The
optimizer must then have a float learning rate (the callback assigns it).
"""

wsd = schedules.WarmupStableDecay(
    0.05, warmup_steps=0.02, decay_steps=0.2, total_steps=BUDGET // 32
)
results.append(
    train(
        "norm test + WSD by samples",
        32,
        test="norm",
        eta=0.5,
        learning_rate_schedule=wsd,
    )
)

figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
for result in results:
    curve = result["curve"]
    window = max(1, min(20, len(curve.losses) // 3))
    smooth = np.convolve(curve.losses, np.ones(window) / window, "valid")
    left.plot(curve.samples[window - 1 :], smooth, label=result["name"])
    right.plot(curve.samples, curve.sizes, label=result["name"])
left.set_xlabel("samples seen")
left.set_ylabel("training loss (moving mean)")
left.set_yscale("log")
right.set_xlabel("samples seen")
right.set_ylabel("batch size")
right.set_yscale("log", base=2)
right.legend(fontsize=8)
figure.savefig(os.path.join(IMAGES, "batch_growth.png"), dpi=90, bbox_inches="tight")
plt.close(figure)

"""
![Batch size and loss](img/adaptive_batch_size/batch_growth.png)

## What the run shows

The full run on JAX (Fashion-MNIST, 30,000 training images, 300,000
samples per run, 2-core CPU) printed:

```
norm test (eta=0.1) asks for a batch of 1944
inner-product test (theta=0.1) asks for 88
augmented test (theta=nu=0.1) asks for 1826
fixed batch 32                    steps  9375 final batch   32  test acc 0.8651
fixed batch 512                   steps   586 final batch  512  test acc 0.8375
norm test, eta 0.5                steps   398 final batch  864  test acc 0.8347
augmented test, theta = nu = 0.5  steps   398 final batch  832  test acc 0.8324
norm test + WSD by samples        steps   431 final batch 1024  test acc 0.8343
```

- On this model the gradient noise is large from the start: at
  initialization the norm test with the paper's `eta = 0.1` already asks for
  a batch of 1,944. With `eta = 0.5` the batch grows from 32 to about 850
  within the first 30,000 samples and then stays nearly flat (the plot).
- The growing-batch runs reach the accuracy of the fixed batch of 512
  (0.832-0.835 against 0.838) in about a third fewer optimizer steps (398
  against 586), which is the point of the method when steps are what costs
  (many devices, a large batch per step).
- They do **not** match the small fixed batch, which takes 24 times more
  steps and ends 3 points higher (0.865). With the same sample budget, the
  small batch simply makes many more updates; AdaGrad's learning rate was
  not re-tuned per run.
- Driving WSD by samples seen changed little here (0.834).

Tune `eta` (or `theta`, `nu`) to your steps-versus-samples trade-off: a
larger tolerance keeps batches smaller for longer.

## Differences from the paper's code

- AdAdaGrad's code tests the batch *before* the step, on a copy of the model
  in training mode; here the test runs *after* the step, on the same batch,
  in inference mode (no copy; dropout off, batch normalization on its
  moving statistics).
- Its tests return `max(test batch, b)`, which can shrink the batch when the
  test batch is smaller than the current one; here the batch never shrinks.
- Its inner products and projections are per variable
  (`inner_product_scope="per_variable"`, our default); the papers' formulas
  take them over all variables at once (`"global"`).
- On TensorFlow the input pipeline may have produced the next batch already,
  so a new size can take effect one batch later.

## References

- Lau, Liu and Kolar, 2024, AdAdaGrad: Adaptive Batch Size Schemes for
  Adaptive Gradient Methods (arXiv 2402.11215).
- Byrd, Chin, Nocedal and Wu, 2012, Sample size selection in optimization
  methods for machine learning.
- Bollapragada, Byrd and Nocedal, 2018, Adaptive Sampling Strategies for
  Stochastic Optimization (arXiv 1710.11258).
"""
