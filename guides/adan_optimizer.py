"""
Title: Training with the Adan optimizer
Author: keras-batchopt team
Date created: 2026/11/22
Last modified: 2026/11/22
Description: Adan in Keras 3: betas, weight decay, clipping, restarts, saving.
Accelerator: None
"""

"""
## Setup

This guide is backend-agnostic: it runs unchanged on TensorFlow, JAX and
PyTorch. Keras reads the backend from the `KERAS_BACKEND` environment variable
when it is first imported, so choose it before starting Python, for example:

```shell
KERAS_BACKEND=jax python adan_optimizer.py
```

The guide trains a few small models on CPU in a couple of minutes. Set
`KERAS_BATCHOPT_GUIDE_QUICK=1` for a quick run on less data and fewer epochs;
the package's test suite runs every guide that way.
"""

import os
import tempfile
import time

import keras
import numpy as np
from keras import ops
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import keras_batchopt

# Quick mode (used by the test suite): less data, fewer epochs, no plot.
QUICK = os.environ.get("KERAS_BATCHOPT_GUIDE_QUICK") == "1"

print("Keras", keras.__version__, "on backend:", keras.backend.backend())

"""
## Introduction

Adan (Xie et al., 2022, "Adan: Adaptive Nesterov Momentum Algorithm for
Faster Optimizing Deep Models") keeps Adam's per-coordinate step scaling and
adds Nesterov-style look-ahead at the price of one extra gradient average.
Nesterov's method takes the gradient at an extrapolated point rather than at
the current weights. Adan reformulates it so that it needs only the gradient
at the current weights and its *difference* from the previous one,
`d = g - g_prev`.

Each variable carries four state tensors (Adam has two): the average `m` of
the gradients, the average `v` of the gradient differences, the average `n`
of the squared "Nesterov gradient" `g + beta_2 * d`, and the previous gradient.
Leaving out bias correction, clipping and weight decay, one step reads:

```
d = g - g_prev                     # 0 on the first step
m = beta_1 * m + (1 - beta_1) * g
v = beta_2 * v + (1 - beta_2) * d
n = beta_3 * n + (1 - beta_3) * (g + beta_2 * d) ** 2
w = w - lr * (m + beta_2 * v) / (sqrt(n) + epsilon)
```

`keras_batchopt.optimizers.Adan` follows the authors' released PyTorch code
(`sail-sg/Adan`) step for step: zero initial moments with Adam-style bias
correction, `epsilon` outside the square root, proximal weight decay, optional
global gradient-norm clipping and restarts. The authors report that Adan
tolerates peak learning rates several times larger than AdamW's, and they
recommend `weight_decay=0.02`.
"""

"""
## A minimal example

`Adan` is a regular `keras.optimizers.Optimizer`: pass it to `compile()`.
"""

rng = np.random.default_rng(0)
x_toy = rng.normal(size=(256, 4)).astype("float32")
y_toy = x_toy @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32")

keras.utils.set_random_seed(0)
model = keras.Sequential(
    [
        keras.Input((4,)),
        keras.layers.Dense(16, activation="relu"),
        keras.layers.Dense(1),
    ]
)
model.compile(
    optimizer=keras_batchopt.optimizers.Adan(learning_rate=1e-2, weight_decay=0.02),
    loss="mse",
)
history = model.fit(x_toy, y_toy, epochs=20, verbose=0)
print(
    f"MSE: {history.history['loss'][0]:.3f} after the first epoch, "
    f"{history.history['loss'][-1]:.4f} after the last"
)

"""
The defaults are those of the official code: `learning_rate=1e-3`,
`beta_1=0.98`, `beta_2=0.92`, `beta_3=0.99`, `epsilon=1e-8`,
`weight_decay=0.0`.
"""

"""
## The beta conventions

The paper and the code write the betas differently. The paper weights the
*new* term, `m = (1 - b1) * m + b1 * g`, and lists `(b1, b2, b3) = (0.02,
0.08, 0.01)`. The official code, like Adam and like this class, weights the
*old* average, `m = beta_1 * m + (1 - beta_1) * g`. So the two are related by
`beta_code = 1 - beta_paper`, and `(0.98, 0.92, 0.99)` is the same setting as
the paper's `(0.02, 0.08, 0.01)`.

Copying the paper's numbers straight into `Adan(...)` raises no error, since
`0.02` is a valid decay, but it makes every average forget its past almost
at once. Convert first:
"""


def betas_from_paper(b1, b2, b3):
    """Paper betas (weights of the new term) to Keras betas (decays)."""
    return tuple(round(1.0 - b, 12) for b in (b1, b2, b3))


beta_1, beta_2, beta_3 = betas_from_paper(0.02, 0.08, 0.01)
print("Keras betas:", (beta_1, beta_2, beta_3))
optimizer = keras_batchopt.optimizers.Adan(beta_1=beta_1, beta_2=beta_2, beta_3=beta_3)

"""
A second trap when comparing with other libraries: `optax.adan` (optax 0.2.8)
weights the gradient difference by `1 - b2` (0.08) where the official code
weights it by `b2` (0.92), both in the Nesterov term inside `n` and in the
step. It also adds `eps_root` inside the square root and offers only
decoupled weight decay. With the same hyperparameters its trajectory differs
from this class (and from the official code) from the second step on, so
expect different results, not a bug, when you port a JAX/optax recipe.
"""

"""
## Adan vs AdamW on real data

Let's train a small MLP on the handwritten digits bundled with scikit-learn
(1,797 grey 8x8 images, 10 classes). Both optimizers start from the *same*
initial weights and see the batches in the same order. AdamW gets its usual
`learning_rate=1e-3`; Adan gets a five times larger one, as the authors
suggest, and their recommended `weight_decay=0.02`.
"""

digits = load_digits()
x_all = (digits.data / 16.0).astype("float32")
y_all = digits.target.astype("int32")
x_train, x_test, y_train, y_test = train_test_split(
    x_all, y_all, test_size=0.25, random_state=0, stratify=y_all
)
if QUICK:
    x_train, y_train = x_train[:512], y_train[:512]
EPOCHS = 3 if QUICK else 30
BATCH_SIZE = 64
print("Train:", x_train.shape, "test:", x_test.shape)


def make_mlp():
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


keras.utils.set_random_seed(0)
initial_weights = make_mlp().get_weights()


def train(optimizer, epochs=EPOCHS, callbacks=None):
    """Trains a fresh MLP from `initial_weights`; returns model, history."""
    keras.utils.set_random_seed(1)  # Same batch order in every run.
    model = make_mlp()
    model.set_weights(initial_weights)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(
        x_train,
        y_train,
        validation_data=(x_test, y_test),
        epochs=epochs,
        batch_size=BATCH_SIZE,
        callbacks=callbacks,
        verbose=0,
    )
    return model, history


def final_test_accuracy(history):
    return history.history["val_accuracy"][-1]


_, adamw_history = train(keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=0.02))
adan_model, adan_history = train(
    keras_batchopt.optimizers.Adan(learning_rate=5e-3, weight_decay=0.02)
)
adamw_accuracy = final_test_accuracy(adamw_history)
adan_accuracy = final_test_accuracy(adan_history)
print(f"AdamW (lr=1e-3) test accuracy: {adamw_accuracy:.4f}")
print(f"Adan  (lr=5e-3) test accuracy: {adan_accuracy:.4f}")

"""
Both optimizers solve this small problem. At five times AdamW's learning rate
Adan trains stably, and in our runs its test loss falls faster over the first
epochs; the plot below (written in the full run only) shows the test loss per
epoch. This demonstrates the workflow; it is not a benchmark. The paper's
claims concern large vision and language models, and a fair comparison tunes
each optimizer's learning rate and weight decay separately.
"""

if not QUICK:
    import matplotlib

    matplotlib.use("Agg")  # Write a file; no display needed.
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for label, history in (
        ("AdamW, lr=1e-3", adamw_history),
        ("Adan, lr=5e-3", adan_history),
    ):
        losses = history.history["val_loss"]
        axis.plot(range(1, len(losses) + 1), losses, label=label)
    axis.set_xlabel("epoch")
    axis.set_ylabel("test loss")
    axis.set_yscale("log")
    axis.legend()
    plot_path = os.path.join(tempfile.mkdtemp(), "adan_vs_adamw.png")
    figure.savefig(plot_path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    print("Saved the learning curves to", plot_path)

"""
## Proximal vs decoupled weight decay

Adan applies weight decay inside its own step, in one of two forms chosen by
`no_prox`:

- `no_prox=False` (the default, as in the official code) takes a *proximal*
  step after the update: `w = (w - step) / (1 + lr * weight_decay)`.
- `no_prox=True` takes AdamW's *decoupled* step before it:
  `w = w * (1 - lr * weight_decay) - step`. This is what `optax.adan` and
  timm's `adanw` do.

For small `lr * weight_decay` the two agree to first order. With a zero
gradient the Adan step itself is zero, so one step shows the decay alone:
"""


def decay_once(no_prox):
    w = keras.Variable(np.ones(4), dtype="float32")
    adan = keras_batchopt.optimizers.Adan(
        learning_rate=0.1, weight_decay=0.5, no_prox=no_prox
    )
    adan.apply_gradients([(ops.zeros(w.shape), w)])
    return float(ops.convert_to_numpy(w)[0])


# lr * weight_decay = 0.1 * 0.5 = 0.05.
print(f"proximal:  {decay_once(False):.5f}, 1 / (1 + 0.05) = {1 / 1.05:.5f}")
print(f"decoupled: {decay_once(True):.5f}, 1 - 0.05       = {1 - 0.05:.5f}")

"""
As in every Keras optimizer, `exclude_from_weight_decay()` keeps chosen
variables, such as biases and normalization scales, from being decayed. Call
it before the optimizer is built, i.e. before training starts:
"""

results = {}
for no_prox in (False, True):
    adan = keras_batchopt.optimizers.Adan(
        learning_rate=5e-3, weight_decay=0.02, no_prox=no_prox
    )
    adan.exclude_from_weight_decay(var_names=["bias"])
    _, history = train(adan)
    results[no_prox] = final_test_accuracy(history)
print(f"no_prox=False test accuracy: {results[False]:.4f}")
print(f"no_prox=True  test accuracy: {results[True]:.4f}")

"""
Here `lr * weight_decay` is `1e-4` per step, so the two forms barely differ.
The choice matters with large learning rates or strong decay, and when you
want to reproduce results obtained with one form or the other.
"""

"""
## Gradient clipping and restarts

`max_grad_norm` scales *all* gradients by
`min(1, max_grad_norm / (global_norm + epsilon))` before the step, exactly as
the official code does, and keeps the clipped gradient as `g_prev`, so the
difference term also sees clipped gradients. Keras's own `global_clipnorm`
argument works too and differs only by the `epsilon`.

`restart_every=k` restarts Adan every `k` steps: `m`, `v` and `n` start from
zero, bias correction starts over and the next gradient difference is zero.
The paper's Algorithm 1 allows such restarts; the authors' README says they
used them for only one table of the paper. You can also restart by hand with
`optimizer.restart()`, for example when a cyclic learning-rate schedule begins
a new cycle or when you fine-tune on new data.

The first step from zero moments is `lr * g / (|g| + epsilon)`, about
`lr * sign(g)` per coordinate, just as for Adam. A step right after
`restart()` is again such a first step:
"""

w = keras.Variable(np.zeros(3), dtype="float32")
adan = keras_batchopt.optimizers.Adan(learning_rate=0.1)
grad = ops.convert_to_tensor(np.array([1.0, -2.0, 0.5], dtype="float32"))


def step_taken(gradient):
    before = ops.convert_to_numpy(w)
    adan.apply_gradients([(gradient, w)])
    return ops.convert_to_numpy(w) - before


print("first step:        ", step_taken(grad))
print("second step:       ", step_taken(3.0 * grad))
adan.restart()
print("step after restart:", step_taken(grad))

"""
In `fit()`, restart from a callback at the start of an epoch. (On JAX the
trainer holds the optimizer state while it runs an epoch, so call `restart()`
between epochs, not between batches.)
"""


class RestartAdan(keras.callbacks.Callback):
    """Restarts the optimizer every `period` epochs."""

    def __init__(self, period):
        super().__init__()
        self.period = period

    def on_epoch_begin(self, epoch, logs=None):
        if epoch > 0 and epoch % self.period == 0:
            self.model.optimizer.restart()


PERIOD = 2 if QUICK else 10  # Epochs between restarts.
steps_per_epoch = -(-len(x_train) // BATCH_SIZE)
runs = {
    "max_grad_norm=1.0": (dict(max_grad_norm=1.0), None),
    f"restart_every={PERIOD} epochs": (
        dict(restart_every=PERIOD * steps_per_epoch),
        None,
    ),
    f"restart() every {PERIOD} epochs": ({}, [RestartAdan(period=PERIOD)]),
}
for label, (kwargs, callbacks) in runs.items():
    adan = keras_batchopt.optimizers.Adan(
        learning_rate=5e-3, weight_decay=0.02, **kwargs
    )
    _, history = train(adan, callbacks=callbacks)
    print(f"{label:<25} test accuracy: {final_test_accuracy(history):.4f}")

"""
The two restart runs restart at the same steps, so they should agree up to
floating-point noise. Clipping at 1.0 changes little on this problem; it
matters for models with occasional gradient spikes.
"""

"""
## Switching backends

Nothing above depends on the backend. To run this guide on another one, set
`KERAS_BACKEND` before `import keras` (in the shell, or with
`os.environ["KERAS_BACKEND"] = "torch"` as the first lines of a script):
the same code runs on `"tensorflow"`, `"jax"` and `"torch"`.

On JAX and TensorFlow, Adan's update is written in `keras.ops` and the
compiled train step fuses it. On PyTorch, where Keras runs each operation
eagerly, Adan switches to a fast path: one fused in-place kernel per variable,
compiled once by `torch.compile`. The fast path and the generic `keras.ops`
code compute the same update, and
`keras_batchopt.config.disable_fast_paths()` switches to the generic code, for
example to compare the two:
"""


def train_for_comparison():
    start = time.perf_counter()
    model, _ = train(
        keras_batchopt.optimizers.Adan(learning_rate=5e-3, weight_decay=0.02),
        epochs=1,
    )
    return model.get_weights(), time.perf_counter() - start


fast_weights, fast_seconds = train_for_comparison()
keras_batchopt.config.disable_fast_paths()
generic_weights, generic_seconds = train_for_comparison()
keras_batchopt.config.enable_fast_paths()
difference = max(
    float(np.max(np.abs(a - b))) for a, b in zip(fast_weights, generic_weights)
)
print(f"fast paths on:  {fast_seconds:.2f} s")
print(f"fast paths off: {generic_seconds:.2f} s")
print(f"largest weight difference after 1 epoch: {difference:.2e}")

"""
On TensorFlow and JAX both runs use the same code, so the difference is zero;
on PyTorch it is at the level of float32 round-off. On a model this small the
timings mostly measure Keras's per-step overhead (and, on PyTorch, possibly
some compiling), so read little into them. The fused kernel matters for models
with many large variables, where the optimizer step is a sizeable share of
each training step.

`torch.compile` compiles the kernel on the first training step, which takes
from a few seconds (warm cache) to tens of seconds (cold cache). If that
first-step cost matters more than the speed of later steps, for example in
short test runs, turn compilation off; the fused kernel then runs eagerly:

```python
keras_batchopt.config.set_torch_compile(False)
```

Both switches can also be set before import with the environment variables
`KERAS_BATCHOPT_FAST_PATHS=0` and `KERAS_BATCHOPT_TORCH_COMPILE=0`, and
`keras_batchopt.config.fast_paths(False)` is a context manager version of
`disable_fast_paths()`.
"""

"""
## Saving and loading

Every keras-batchopt class is registered with Keras's serialization under the
`keras_batchopt` package, so a model saved with an `Adan` optimizer loads with
plain `keras.models.load_model()`, no `custom_objects` needed, as long as
`keras_batchopt` has been imported. The `.keras` file also holds the
optimizer's state (`m`, `v`, `n`, the previous gradient and the step count),
so training resumes where it stopped.
"""

model = adan_model  # Trained in "Adan vs AdamW" above.
with tempfile.TemporaryDirectory() as directory:
    path = os.path.join(directory, "digits_mlp.keras")
    model.save(path)
    restored = keras.models.load_model(path)

restored_adan = restored.optimizer
print("Restored optimizer:", type(restored_adan).__name__)
print("beta_2:", restored_adan.beta_2, "no_prox:", restored_adan.no_prox)
print(
    "Steps taken: saved",
    int(ops.convert_to_numpy(model.optimizer.iterations)),
    "restored",
    int(ops.convert_to_numpy(restored_adan.iterations)),
)
np.testing.assert_allclose(
    restored.predict(x_test, verbose=0),
    model.predict(x_test, verbose=0),
    rtol=1e-5,
    atol=1e-5,
)
restored.fit(x_train, y_train, epochs=1, batch_size=BATCH_SIZE, verbose=0)
print("The restored model predicts the same and trains on.")

"""
## Going further

- `help(keras_batchopt.optimizers.Adan)` lists every argument and each
  convention that differs from the paper, optax or Keras.
- Adan takes every base `keras.optimizers.Optimizer` argument: learning-rate
  schedules (for example `keras.optimizers.schedules.CosineDecay` with
  warm-up), `use_ema`, `gradient_accumulation_steps`, and loss scaling via
  `keras.optimizers.LossScaleOptimizer` for mixed precision.
- When tuning the betas, the authors suggest starting with `beta_3`, then
  `beta_1`.
- Paper: [Xie et al., 2022](https://arxiv.org/abs/2208.06677), TPAMI 2024.
  Official code: [sail-sg/Adan](https://github.com/sail-sg/Adan).
"""
