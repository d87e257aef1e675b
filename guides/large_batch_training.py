"""
Title: Large-batch training with LAMB and LARS
Author: keras-batchopt team
Date created: 2026/11/23
Last modified: 2026/11/23
Description: Batch 32 vs 2048 on Fashion-MNIST: scaling, warmup, LAMB, LARS.
Accelerator: None
"""

"""
## Setup

This guide is backend-agnostic: it runs unchanged on TensorFlow, JAX and
PyTorch. Keras reads the backend from the `KERAS_BACKEND` environment variable
when it is first imported, so choose it before starting Python, for example:

```shell
KERAS_BACKEND=jax python large_batch_training.py
```

The full run trains ten small models on Fashion-MNIST and takes about three
minutes on two CPU cores with JAX. Set `KERAS_BATCHOPT_GUIDE_QUICK=1` for a
quick run on a subset with two epochs; the package's test suite runs every
guide that way.
"""

import gzip
import math
import os
import tempfile
import time

import keras
import numpy as np
from keras import ops
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import keras_batchopt

# Quick mode (used by the test suite): less data, fewer epochs.
QUICK = os.environ.get("KERAS_BATCHOPT_GUIDE_QUICK") == "1"

print("Keras", keras.__version__, "on backend:", keras.backend.backend())

"""
## Introduction

A larger batch gives a better estimate of the gradient and more work per
step to spread over many devices, so an epoch takes fewer, more parallel
steps. The catch is that, for the same number of epochs, the model takes
far fewer steps: at batch 2048 an epoch of Fashion-MNIST's 60,000 images is
30 steps instead of 1,875 at batch 32. Left as it is, the large-batch model
ends up less accurate. Three tools are used to win this back:

1. **Scale the learning rate with the batch size**, so that fewer steps
   travel as far. Goyal et al. (2017) scaled SGD's learning rate linearly
   (`lr = base_lr * batch_size / base_batch`): `k` times the batch averages
   `k` times as many gradients, and one step at `k` times the learning rate
   then stands in for `k` small steps. For Adam-type optimizers, whose steps
   are already normalized by the gradient's scale, the square-root rule
   (`lr = base_lr * sqrt(batch_size / base_batch)`) is the usual choice:
   `k` times the batch cuts the gradient noise's standard deviation by
   `sqrt(k)`, and the LAMB paper scaled its learning rate this way.
2. **Warm up**: grow the learning rate linearly from zero over the first
   epoch or so. A large scaled learning rate applied to a freshly
   initialized network easily diverges; after some steps the gradients are
   smaller and better conditioned.
3. **Adapt the step per layer** with a *trust ratio*: LARS (You, Gitman and
   Ginsburg, 2017) for SGD with momentum and LAMB (You et al., 2020) for
   Adam. This guide tries them.

We train the same small network at batch 32 and at batch 2048 for the same
number of epochs, with four optimizers, and see how much of the accuracy
gap between the two batch sizes each closes.
"""

"""
## LARS and LAMB in one paragraph each

Layers differ in how large their weights are compared with their
gradients, so a single global learning rate is too large for some layers
and too small for others, and more so when it is scaled up for a large
batch. LARS and LAMB compute each variable's update direction `u` as usual
and then rescale it by the *trust ratio* `r = ||w|| / ||u||` (norms over
the whole variable), so that a step changes each variable by about
`learning_rate` times its own norm, whatever the scale of its gradient.

- **LARS** (`keras_batchopt.optimizers.Lars`) is SGD with momentum, with
  `u = g + weight_decay * w` and the ratio multiplied by a trust coefficient
  `eta` (`trust_coefficient=0.001`): the buffer accumulates
  `learning_rate * eta * ||w|| / ||u|| * u`. Its arguments:
  `Lars(learning_rate=1.0, momentum=0.9, nesterov=False, weight_decay=0.0,
  trust_coefficient=0.001, epsilon=0.0, trust_mode="norm_of_sum",
  exclude_from_layer_adaptation=None, larc=False)`. `trust_mode=
  "sum_of_norms"` uses the paper's denominator
  `||g|| + weight_decay * ||w||` instead of `||g + weight_decay * w||`, and
  `larc=True` clips the ratio so that no variable steps faster than the
  global learning rate (NVIDIA's LARC). By default variables of rank 0 or 1
  (biases, normalization scales and offsets) are not adapted: they take
  plain momentum steps at the global learning rate.
- **LAMB** (`keras_batchopt.optimizers.Lamb`) is Adam with
  `u = m_hat / (sqrt(v_hat) + epsilon) + weight_decay * w`, the
  bias-corrected Adam direction plus weight decay, and the trust ratio applied
  to that: `w = w - learning_rate * ||w|| / ||u|| * u`. Its arguments:
  `Lamb(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
  weight_decay=0.0, exclude_from_layer_adaptation=None,
  max_trust_ratio=None, bias_correction=True)`. By default, the variables
  excluded from weight decay are also excluded from the trust ratio, as in
  TensorFlow Addons; `max_trust_ratio=1.0` gives the clipped variant LAMBC.

**`keras_batchopt.optimizers.Lamb` is not `keras.optimizers.Lamb`.** Keras's
Lamb applies weight decay as a separate, decoupled step outside the trust
ratio. Here, as in the paper, TensorFlow Addons and `optax.lamb`, the decay
term is part of `u` and so is rescaled by the trust ratio. The two agree
when `weight_decay=0` (and the epsilons match), and differ otherwise.

Both accept a list of regular expressions (matched against variable paths
such as `"dense_1/bias"`) or a callable as `exclude_from_layer_adaptation`;
`[]` adapts every variable, as `optax.lars` and `optax.lamb` do.

A single step shows what the trust ratio does. Take two weight matrices,
one with a norm of 1 and a gradient of norm 0.001, the other with a norm
of 10 and a gradient of norm 100, and compare how much one step changes
each, relative to its norm:
"""


def relative_changes(optimizer):
    """One step on two (10, 10) variables; returns ||dw|| / ||w|| each."""
    weights = [np.full((10, 10), 0.1), np.full((10, 10), 1.0)]
    gradients = [np.full((10, 10), 1e-4), np.full((10, 10), 10.0)]
    variables = [keras.Variable(w, dtype="float32") for w in weights]
    optimizer.apply_gradients(
        [
            (ops.convert_to_tensor(g, dtype="float32"), v)
            for g, v in zip(gradients, variables)
        ]
    )
    return [
        float(np.linalg.norm(ops.convert_to_numpy(v) - w) / np.linalg.norm(w))
        for v, w in zip(variables, weights)
    ]


for name, optimizer in (
    ("SGD,  lr=0.01", keras.optimizers.SGD(learning_rate=0.01)),
    ("LARS, lr=1.0", keras_batchopt.optimizers.Lars(learning_rate=1.0)),
    ("Adam, lr=0.01", keras.optimizers.Adam(learning_rate=0.01)),
    ("LAMB, lr=0.01", keras_batchopt.optimizers.Lamb(learning_rate=0.01)),
):
    small, large = relative_changes(optimizer)
    print(f"{name}: relative change {small:.1e} and {large:.1e}")

"""
SGD's step is proportional to the gradient: it changes the first matrix
by a hundred-thousandth of its norm and the second by a tenth. Adam's first
step is about `lr` per coordinate whatever the gradient, a tenth of the
first matrix but a hundredth of the second. With LARS each variable moves
by `learning_rate * eta` of its norm (here `1.0 * 0.001`), and with LAMB by
`learning_rate` of its norm, in both cases the same for the two matrices.
"""

"""
## The data: Fashion-MNIST

Fashion-MNIST (Xiao et al., 2017) has 60,000 training and 10,000 test
greyscale images of 28x28 pixels in 10 classes of clothing. On Debian and
Ubuntu the package `dataset-fashion-mnist` installs the original gzipped
IDX files under `/usr/share/datasets/fashion-mnist`, which a few lines of
NumPy read. If they are missing, the guide falls back to scikit-learn's
bundled 8x8 digits (1,797 images), so that it always runs, but the numbers
discussed below are for Fashion-MNIST.
"""

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def read_idx(path):
    """Reads a gzipped IDX file of unsigned bytes into a NumPy array."""
    # IDX: two zero bytes, a type byte (0x08 = uint8), the number of
    # dimensions, one big-endian int32 per dimension, then the data.
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path} is not an IDX file of unsigned bytes.")
    ndim = raw[3]
    shape = tuple(np.frombuffer(raw, ">i4", count=ndim, offset=4))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_data():
    paths = [os.path.join(FASHION_MNIST_DIR, f) for f in FASHION_MNIST_FILES]
    if all(os.path.isfile(path) for path in paths):
        x_train, y_train, x_test, y_test = (read_idx(p) for p in paths)
        x_train = x_train.reshape(len(x_train), -1) / 255.0
        x_test = x_test.reshape(len(x_test), -1) / 255.0
        name = "Fashion-MNIST"
    else:
        print(
            f"Fashion-MNIST not found in {FASHION_MNIST_DIR} (install the "
            "Debian package dataset-fashion-mnist); falling back to "
            "scikit-learn's digits. The numbers in the text are for "
            "Fashion-MNIST."
        )
        digits = load_digits()
        x_train, x_test, y_train, y_test = train_test_split(
            digits.data / 16.0,
            digits.target,
            test_size=0.25,
            random_state=0,
            stratify=digits.target,
        )
        name = "digits"
    return (
        name,
        x_train.astype("float32"),
        y_train.astype("int32"),
        x_test.astype("float32"),
        y_test.astype("int32"),
    )


DATASET, x_train, y_train, x_test, y_test = load_data()
if QUICK and DATASET == "Fashion-MNIST":
    x_train, y_train = x_train[:4096], y_train[:4096]
    x_test, y_test = x_test[:2048], y_test[:2048]
print(f"{DATASET}: train {x_train.shape}, test {x_test.shape}")

"""
## The experiment

The model is a small MLP with two hidden layers of 256 units and layer
normalization, which trains on a CPU in seconds per epoch. Every run
starts from the same initial weights and trains for the same number of
epochs, 10 (2 in quick mode), at the small and at the large batch size.
The large batch is 2048 on Fashion-MNIST; in quick mode and on the digits
it is 512, since the training sets are smaller.
"""

SMALL_BATCH = 32
LARGE_BATCH = 2048 if DATASET == "Fashion-MNIST" and not QUICK else 512
EPOCHS = 2 if QUICK else 10
WARMUP_EPOCHS = 1


def make_mlp():
    return keras.Sequential(
        [
            keras.Input((x_train.shape[1],)),
            keras.layers.Dense(256),
            keras.layers.LayerNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.Dense(256),
            keras.layers.LayerNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.Dense(10),
        ]
    )


keras.utils.set_random_seed(0)
initial_weights = make_mlp().get_weights()

"""
### Learning rates: scaling, warmup and decay

Each optimizer gets one *base* learning rate for a reference batch of 256,
which the scaling rule converts to the batch size at hand: linearly for SGD
and LARS, by the square root for AdamW and LAMB. From batch 32 to batch
2048 the batch grows 64 times, so SGD's and LARS's learning rates grow 64
times and AdamW's and LAMB's 8 times.

The base rates come from a short sweep at batch 256 (10 epochs, three or
four values per optimizer, scored on the test set; a real project would
hold out a validation split), each the best or within 0.3 points of the
best: `1e-3` for AdamW, `1e-2` for LAMB, `0.1` for SGD and `1.0` for
LARS. LARS's learning rate is not comparable with SGD's: its
steps are about `learning_rate * 0.001` of each weight's norm.

The schedule warms up linearly from zero for one epoch and then follows a
cosine decay to zero at the end of training. Keras's `CosineDecay` does
both: with `warmup_target` and `warmup_steps` it first ramps from
`initial_learning_rate` to `warmup_target`.
"""

BASE_BATCH = 256
BASE_LEARNING_RATES = {"AdamW": 1e-3, "LAMB": 1e-2, "SGD": 0.1, "LARS": 1.0}
SCALING_RULES = {
    "AdamW": "sqrt",
    "LAMB": "sqrt",
    "SGD": "linear",
    "LARS": "linear",
}


def scaled_learning_rate(name, batch_size):
    ratio = batch_size / BASE_BATCH
    if SCALING_RULES[name] == "sqrt":
        ratio = math.sqrt(ratio)
    return BASE_LEARNING_RATES[name] * ratio


def steps_per_epoch(batch_size):
    return math.ceil(len(x_train) / batch_size)


def warmup_cosine(peak_learning_rate, batch_size):
    warmup_steps = WARMUP_EPOCHS * steps_per_epoch(batch_size)
    total_steps = EPOCHS * steps_per_epoch(batch_size)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=total_steps - warmup_steps,
        warmup_target=peak_learning_rate,
        warmup_steps=warmup_steps,
    )


schedule = warmup_cosine(scaled_learning_rate("SGD", LARGE_BATCH), LARGE_BATCH)
total = EPOCHS * steps_per_epoch(LARGE_BATCH)
warmup = WARMUP_EPOCHS * steps_per_epoch(LARGE_BATCH)
print(f"SGD at batch {LARGE_BATCH}, {total} steps; learning rate at step")
for step in sorted({0, warmup // 2, warmup, (warmup + total) // 2, total}):
    print(f"  {step:4d}: {float(schedule(step)):.4f}")

"""
### Weight decay and its exclusions

All four optimizers use weight decay: `0.01` for AdamW and LAMB, `1e-4`
for SGD and LARS, the usual values for each family. Biases and the layer
normalization's scale (`gamma`) and offset (`beta`) are excluded, as is
customary: `exclude_from_weight_decay(var_names=[...])` takes regular
expressions searched in each variable's name, and must be called before
training starts. With the default `exclude_from_layer_adaptation=None`,
LAMB then leaves the same variables out of the trust ratio, and LARS
leaves out every variable of rank 0 or 1, which here is the same set.

Pairing AdamW (rather than Adam) with LAMB and SGD with LARS keeps the
comparison about the trust ratio: within each pair the two optimizers use
the same moments, scaling rule, schedule and decay strength (each with its
own base learning rate), although the decay enters the update differently:
decoupled in AdamW and Keras's SGD, inside the trust ratio in LAMB and
LARS.
"""

NO_DECAY = ["bias", "gamma", "beta"]


def make_optimizer(name, batch_size, **kwargs):
    learning_rate = warmup_cosine(scaled_learning_rate(name, batch_size), batch_size)
    if name == "AdamW":
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=0.01)
    elif name == "LAMB":
        optimizer = keras_batchopt.optimizers.Lamb(
            learning_rate, weight_decay=0.01, **kwargs
        )
    elif name == "SGD":
        optimizer = keras.optimizers.SGD(learning_rate, momentum=0.9, weight_decay=1e-4)
    else:
        optimizer = keras_batchopt.optimizers.Lars(
            learning_rate, momentum=0.9, weight_decay=1e-4, **kwargs
        )
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY)
    return optimizer


def train(name, batch_size, **kwargs):
    """Trains a fresh MLP from `initial_weights`; returns model, history."""
    keras.utils.set_random_seed(1)  # Same data order in every run.
    model = make_mlp()
    model.set_weights(initial_weights)
    model.compile(
        optimizer=make_optimizer(name, batch_size, **kwargs),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    start = time.perf_counter()
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_test, y_test),
        epochs=EPOCHS,
        batch_size=batch_size,
        verbose=0,
    )
    history.seconds = time.perf_counter() - start
    return model, history


"""
### Running it

Eight runs: four optimizers at two batch sizes. The table lists each run's
peak learning rate, its number of steps, the final test accuracy and the
wall time.
"""

OPTIMIZERS = ("AdamW", "LAMB", "SGD", "LARS")
models, histories = {}, {}
print(
    f"{'optimizer':<9} {'batch':>5} {'peak lr':>8} {'steps':>6} "
    f"{'test acc':>8} {'time':>7}"
)
for name in OPTIMIZERS:
    for batch_size in (SMALL_BATCH, LARGE_BATCH):
        model, history = train(name, batch_size)
        models[name, batch_size] = model
        histories[name, batch_size] = history
        print(
            f"{name:<9} {batch_size:>5} "
            f"{scaled_learning_rate(name, batch_size):>8.3g} "
            f"{EPOCHS * steps_per_epoch(batch_size):>6} "
            f"{history.history['val_accuracy'][-1]:>8.4f} "
            f"{history.seconds:>6.1f}s"
        )

"""
The gap is the small-batch accuracy minus the large-batch accuracy:
"""


def final_accuracy(name, batch_size):
    return histories[name, batch_size].history["val_accuracy"][-1]


print(
    f"{'optimizer':<9} {'batch ' + str(SMALL_BATCH):>10} "
    f"{'batch ' + str(LARGE_BATCH):>10} {'gap':>7}"
)
for name in OPTIMIZERS:
    small = final_accuracy(name, SMALL_BATCH)
    large = final_accuracy(name, LARGE_BATCH)
    print(f"{name:<9} {small:>10.4f} {large:>10.4f} {small - large:>+7.4f}")

"""
The learning curves, test accuracy after each epoch, with Adam-type
optimizers on the left and SGD-type ones on the right; solid lines are the
small batch, dashed lines the large one:
"""

import matplotlib

matplotlib.use("Agg")  # Write a file; no display needed.
from matplotlib import pyplot as plt

figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
for axis, pair in zip(axes, (("AdamW", "LAMB"), ("SGD", "LARS"))):
    for name, color in zip(pair, ("tab:blue", "tab:orange")):
        for batch_size, style in ((SMALL_BATCH, "-"), (LARGE_BATCH, "--")):
            accuracy = histories[name, batch_size].history["val_accuracy"]
            axis.plot(
                range(1, len(accuracy) + 1),
                accuracy,
                style,
                color=color,
                label=f"{name}, batch {batch_size}",
            )
    axis.set_xlabel("epoch")
    axis.legend()
axes[0].set_ylabel("test accuracy")
figure.suptitle(f"{DATASET}, MLP, backend {keras.backend.backend()}")
plot_path = os.path.join(tempfile.mkdtemp(), "large_batch_training.png")
figure.savefig(plot_path, dpi=100, bbox_inches="tight")
plt.close(figure)
print("Saved the learning curves to", plot_path)

"""
### What the full run showed

The numbers below come from one full run of this guide with the JAX
backend on a shared machine with two CPU cores (Keras 3.15.1; about three
minutes in all). Quick mode trains on a subset for two epochs, so its
numbers are different. Final test accuracy:

```
optimizer   batch 32 batch 2048     gap
AdamW         0.8993     0.8849 +0.0144
LAMB          0.9007     0.8831 +0.0176
SGD           0.8968     0.8443 +0.0525
LARS          0.8782     0.8657 +0.0125
```

- **Every optimizer loses accuracy at batch 2048.** Ten epochs are 300
  steps instead of 18,750, and learning-rate scaling with warmup does not
  make up for all of that.
- **LAMB does not close AdamW's gap here.** AdamW with square-root scaling
  and warmup ends 1.4 points below its batch-32 accuracy; LAMB ends 1.8
  points below its own, and at batch 2048 it is 0.2 points behind AdamW.
  It also starts more slowly: after the first epoch it is at 71% where
  AdamW is at 80%.
- **LARS helps SGD at the large batch, but does not reach small-batch SGD.**
  With the linearly scaled peak learning rate of 0.8, SGD has the largest
  gap, 5.3 points. LARS at batch 2048 is 2.1 points better than SGD at
  batch 2048, and its own gap is only 1.3 points. Part of that smaller gap
  comes from the other end, though: at batch 32, LARS is 1.9 points *below*
  SGD. The next section shows a LARS setting that does better.

So on this problem the learning-rate recipe does most of the work, and the
trust ratio adds little (LAMB) or helps only SGD at the large batch
(LARS). That should not be read as a verdict on either method. LARS and
LAMB were designed for deep networks (ResNet-50, BERT) and batches of 8K
to 64K, where the ratio of weight norm to gradient norm differs by orders
of magnitude between layers; a two-layer MLP with layer normalization has
little of that to correct. The base learning rates were chosen at batch
256 and not retuned at batch 2048, and each number comes from a single
seed, so differences of a few tenths of a point are within the noise. On
this 2-core CPU a batch-2048 run took 7-10 seconds and a batch-32 run
16-34 seconds, depending on the optimizer and on the load of the shared
machine (each including a test evaluation per epoch); on an
accelerator, where the large batch runs in parallel, the difference in
time is much larger.
"""

"""
## Which variables LARS adapts

With the default `exclude_from_layer_adaptation=None`, LARS takes plain
momentum steps, at the global learning rate, for the biases and layer
normalization parameters. At batch 2048 that rate is `1.0 * 2048 / 256 =
8`, a very large SGD learning rate for these variables, while the adapted
matrices move by only about `8 * 0.001` of their norm per step. Passing
`exclude_from_layer_adaptation=[]` adapts every variable (as `optax.lars`
does); a variable whose norm is zero, such as a bias at initialization,
takes a ratio of 1 until it has grown.
"""

adapt_all = {}
for batch_size in (SMALL_BATCH, LARGE_BATCH):
    _, history = train("LARS", batch_size, exclude_from_layer_adaptation=[])
    adapt_all[batch_size] = history.history["val_accuracy"][-1]
lars_rows = {
    "default": [final_accuracy("LARS", b) for b in (SMALL_BATCH, LARGE_BATCH)],
    "adapt all": [adapt_all[SMALL_BATCH], adapt_all[LARGE_BATCH]],
}
for label, (small, large) in lars_rows.items():
    print(
        f"LARS, {label:<9}: batch {SMALL_BATCH} {small:.4f}, "
        f"batch {LARGE_BATCH} {large:.4f}, gap {small - large:+.4f}"
    )

"""
In the full run, adapting every variable changed LARS's results to 88.05%
at batch 32 and 88.57% at batch 2048: the gap closed (the large batch even
came out 0.5 points ahead, within single-seed noise), and LARS at batch
2048 was on par with AdamW and LAMB at that batch size. It was still 1.1
points short of SGD at batch 32, so the gap to the best small-batch
optimizer remains.
When the scaled learning rate is large, check which variables LARS leaves
out of the trust ratio: they take that rate as a plain momentum step.
"""

"""
## Saving and loading

Every keras-batchopt class is registered with Keras's serialization under
the `keras_batchopt` package, so a model compiled with `Lamb` or `Lars`
loads with plain `keras.models.load_model()`, no `custom_objects` needed,
as long as `keras_batchopt` has been imported. The optimizer's arguments
(`exclude_from_layer_adaptation` included), its learning-rate schedule and
its state (moments and step count) are saved with the model.
"""

model = models["LAMB", LARGE_BATCH]
with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, "lamb_mlp.keras")
    model.save(path)
    restored = keras.models.load_model(path)

print("Restored optimizer:", type(restored.optimizer).__name__)
schedule_config = restored.optimizer.get_config()["learning_rate"]
print("Learning rate:", schedule_config["class_name"])
print(
    "Steps taken: saved",
    int(ops.convert_to_numpy(model.optimizer.iterations)),
    "restored",
    int(ops.convert_to_numpy(restored.optimizer.iterations)),
)
np.testing.assert_allclose(
    restored.predict(x_test, verbose=0),
    model.predict(x_test, verbose=0),
    rtol=1e-5,
    atol=1e-5,
)
print("The restored model predicts the same.")

"""
The exclusions given to `exclude_from_weight_decay()` are saved too.
Keras's own optimizers keep that list outside their config and forget it on
save; keras-batchopt optimizers record it (`decay_exclusions` in
`get_config()`), so the restored `Lamb` goes on decaying, and adapting,
exactly the variables it did before:
"""

print("Saved exclusions:", restored.optimizer.get_config()["decay_exclusions"])

"""
## Going further

- `help(keras_batchopt.optimizers.Lamb)` and
  `help(keras_batchopt.optimizers.Lars)` list every argument and each
  convention that differs from the papers, optax, timm or Keras.
- Both take every base `keras.optimizers.Optimizer` argument. Gradient
  accumulation (`gradient_accumulation_steps=k`) simulates a `k` times
  larger batch on one device: the optimizer steps once per `k` batches.
- On PyTorch both optimizers run a fused in-place kernel per variable,
  compiled once by `torch.compile`; `keras_batchopt.config` switches it off
  (see the Adan guide).
- Papers: [Goyal et al., 2017](https://arxiv.org/abs/1706.02677) (linear
  scaling and warmup), [You, Gitman and Ginsburg,
  2017](https://arxiv.org/abs/1708.03888) (LARS), [You et al.,
  2020](https://arxiv.org/abs/1904.00962) (LAMB), [Xiao et al.,
  2017](https://arxiv.org/abs/1708.07747) (Fashion-MNIST).
"""
