"""
Title: Keeping the effective learning rate fixed with Normalize-and-Project
Author: keras-batchopt team
Date created: 2026/12/06
Last modified: 2026/12/06
Description: NaP against Adam on a sequence of changing Fashion-MNIST tasks.
Accelerator: None
"""

"""
## Setup

This guide runs unchanged on TensorFlow, JAX and PyTorch; pick the backend
with `KERAS_BACKEND` before starting Python:

```shell
KERAS_BACKEND=jax python normalize_and_project.py
```

The full run trains nine small networks through a sequence of tasks built
from Fashion-MNIST (the Debian package `dataset-fashion-mnist`;
scikit-learn's digits if it is missing) in a few minutes on two CPU cores.
`KERAS_BATCHOPT_GUIDE_QUICK=1` runs a small subset; the test suite runs the
guide that way.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_batchopt import optimizers  # noqa: E402

# The data loader of the package's `compare` job: Fashion-MNIST when it is
# installed, else scikit-learn's digits.
from keras_batchopt.src.compare.data import load_dataset  # noqa: E402

QUICK = os.environ.get("KERAS_BATCHOPT_GUIDE_QUICK") == "1"
print("Keras", keras.__version__, "on backend:", keras.backend.backend())

data = load_dataset(
    "auto",
    train_size=1024 if QUICK else 8192,
    test_size=500 if QUICK else 2000,
)
x_train, y_train = data.x_train.reshape(len(data.x_train), -1), data.y_train
x_test, y_test = data.x_test.reshape(len(data.x_test), -1), data.y_test
print(data.name, x_train.shape, x_test.shape)
CLASSES = int(y_train.max()) + 1
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

"""
## Introduction

A normalization layer makes the layer before it scale-invariant: scaling
its weights `W` by any `c > 0` leaves the network's output unchanged. The
gradient then shrinks as `1 / ||W||`, and a step changes the function by
about `lr / ||W||^2`, the *effective* learning rate. Training grows `||W||`,
so the effective learning rate decays on its own, a hidden schedule. On a
stationary problem that schedule is often harmless, even helpful; when the
problem keeps changing, the network can become too slow to follow it (a
form of *loss of plasticity*).

Normalize-and-Project (Lyle et al., 2024) keeps a normalization layer before
every nonlinearity and, after each optimizer step, scales every layer's
weights back to their initial norm, so the effective learning rate is the
one the optimizer's schedule says. `NormalizeAndProject` wraps any Keras
optimizer:

```python
optimizer = optimizers.NormalizeAndProject(keras.optimizers.Adam(1e-3),
                                           exclude=["head"])
```

It projects each `kernel` on its own, each normalization layer's `gamma`
and `beta` together, and leaves biases and the layers named in `exclude`
(here the output layer, which feeds no normalization) alone.

## A sequence of tasks

Each task permutes the pixels and the labels afresh: the network must
learn a new mapping from scratch-looking inputs with every task, while
keeping its weights from the previous ones. We measure the test accuracy on
task `k` right after training on it, having trained on the `k - 1` tasks
before.
"""

TASKS = 3 if QUICK else 10
EPOCHS_PER_TASK = 1 if QUICK else 4
SEEDS = [0] if QUICK else [0, 1, 2]
BATCH = 64


def tasks(seed):
    rng = np.random.default_rng(1000 + seed)
    for _ in range(TASKS):
        pixels = rng.permutation(x_train.shape[1])
        labels = rng.permutation(CLASSES)
        yield (
            (x_train[:, pixels], labels[y_train]),
            (x_test[:, pixels], labels[y_test]),
        )


def make_model(normalized):
    layers = [keras.Input((x_train.shape[1],))]
    for units in (256, 256):
        layers.append(keras.layers.Dense(units, use_bias=not normalized))
        if normalized:
            layers.append(keras.layers.LayerNormalization())
        layers.append(keras.layers.Activation("relu"))
    layers.append(keras.layers.Dense(CLASSES, name="head"))
    return keras.Sequential(layers)


def run(method, seed):
    keras.utils.set_random_seed(seed)
    model = make_model(normalized=method != "Adam, no normalization")
    optimizer = keras.optimizers.Adam(3e-3)
    if method == "NaP (Adam)":
        optimizer = optimizers.NormalizeAndProject(optimizer, exclude=["head"])
    model.compile(optimizer=optimizer, loss=LOSS, metrics=["acc"])
    kernel = model.layers[0].kernel
    accuracies, norms = [], []
    for (x, y), (xt, yt) in tasks(seed):
        model.fit(x, y, batch_size=BATCH, epochs=EPOCHS_PER_TASK, verbose=0)
        accuracies.append(model.evaluate(xt, yt, verbose=0)[1])
        norms.append(float(np.linalg.norm(keras.ops.convert_to_numpy(kernel))))
    return np.array(accuracies), np.array(norms)


METHODS = ["Adam, no normalization", "Adam + LayerNorm", "NaP (Adam)"]
results = {}
for method in METHODS:
    start = time.perf_counter()
    runs = [run(method, seed) for seed in SEEDS]
    accuracies = np.array([a for a, _ in runs])
    norms = np.array([n for _, n in runs])
    results[method] = accuracies
    seconds = (time.perf_counter() - start) / len(SEEDS)
    print(
        f"{method:24s} acc on task k: "
        + " ".join(f"{a:.3f}" for a in accuracies.mean(axis=0))
        + f"  | first-layer norm {norms[:, 0].mean():.1f} -> "
        f"{norms[:, -1].mean():.1f}  {seconds:5.1f} s/run"
    )
for method, accuracies in results.items():
    first, last = accuracies[:, 0], accuracies[:, -1]
    print(
        f"{method:24s} task 1 {first.mean():.3f} +- {first.std():.3f}   "
        f"task {TASKS} {last.mean():.3f} +- {last.std():.3f}"
    )

"""
## What the run shows

A full run (`KERAS_BACKEND=jax`, 8,192 training images, 10 tasks of 4
epochs each, Adam with learning rate 3e-3, mean over three seeds; 2-core
CPU shared with other jobs) printed:

| task k | Adam, no normalization | Adam + LayerNorm | NaP (Adam) |
| --- | --- | --- | --- |
| 1 | 0.852 | 0.833 | 0.833 |
| 2 | 0.839 | 0.840 | 0.824 |
| 3 | 0.822 | 0.835 | 0.827 |
| 4 | 0.825 | 0.843 | 0.833 |
| 5 | 0.789 | 0.828 | 0.812 |
| 6 | 0.825 | 0.834 | 0.834 |
| 7 | 0.812 | 0.841 | 0.838 |
| 8 | 0.816 | 0.828 | 0.819 |
| 9 | 0.814 | 0.840 | 0.831 |
| 10 | 0.810 | 0.837 | 0.831 |
| first-layer norm, after task 1 -> 10 | 29.0 -> 48.3 | 31.5 -> 86.0 | 19.6 -> 19.6 |

On task 10: Adam without normalization 0.810 +- 0.010, Adam with
LayerNorm 0.837 +- 0.001, NaP 0.831 +- 0.005 (task 1: 0.852, 0.833, 0.833).

**NaP does not help in this run.** The unnormalized network loses about 4
points of accuracy over the ten tasks, and adding LayerNorm is what removes
that loss. With LayerNorm the first layer's norm almost triples, so the
effective learning rate of plain Adam does decay, but over ten tasks that
decay costs nothing measurable. NaP holds the norm at its initial value and
ends within noise of LayerNorm alone, slightly below it. The paper's
benefits appear over far longer nonstationary runs (hundreds of tasks, or
Atari games played in sequence) than a CPU guide can afford, and it pairs
NaP with a learning-rate schedule that the fixed norm makes explicit; this
guide uses a constant learning rate.

## Notes on the implementation

- The projection runs inside the inner optimizer's update step, so EMA
  (`use_ema=True` on the inner optimizer) averages the projected weights,
  and with `gradient_accumulation_steps` only the real steps project.
- The initial norms are optimizer variables, recorded on the first step and
  saved with the model; `keras.models.load_model` needs no
  `custom_objects`.
- Wrap NaP in `keras.optimizers.LossScaleOptimizer` for mixed precision,
  not the other way round.
- No official code was released; scale and offset are projected jointly
  to their initial norm, as in a public Flax port.

## References

- Lyle, Zheng, Khetarpal, Martens, van Hasselt, Pascanu and Dabney, 2024,
  [Normalization and effective learning rates in reinforcement
  learning](https://arxiv.org/abs/2407.01800) (NeurIPS 2024).
"""
