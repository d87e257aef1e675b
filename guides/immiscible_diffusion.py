"""
Title: Immiscible Diffusion: pairing noise with images
Author: keras-batchopt team
Date created: 2026/12/06
Last modified: 2026/12/06
Description: A tiny DDPM on digits with and without Immiscible Diffusion.
Accelerator: None
"""

"""
## Setup

This guide runs unchanged on TensorFlow, JAX and PyTorch; choose the backend
with `KERAS_BACKEND` before starting Python:

```shell
KERAS_BACKEND=jax python immiscible_diffusion.py
```

It trains small denoising diffusion models (DDPM) on scikit-learn's 8 x 8
digits, in a few minutes on two CPU cores with JAX.
`KERAS_BATCHOPT_GUIDE_QUICK=1` trains for fewer steps; the test suite runs the
guide that way.

A diffusion model is trained on pairs (image, noise): it sees
`x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) e` and learns to predict `e`. Pairs
are drawn at random, so every image is diffused towards every region of the
Gaussian: Li et al. call this miscibility and argue that it makes the
denoising targets hard to tell apart. Immiscible Diffusion reassigns, inside
each batch, the drawn noise samples to the images so that the total distance
is smallest (a linear assignment); the noise batch is the same set of
Gaussian samples, only paired differently. `keras_batchopt.strategies` has
the exact assignment (`assign_noise`, on the host) and the cheaper KNN version
of the follow-up paper (`sample_nearest_noise`: the nearest of k draws per
image, in `keras.ops`, inside a compiled step).
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_batchopt import strategies  # noqa: E402

# The data loader of the package's `compare` job.
from keras_batchopt.src.compare.data import load_dataset  # noqa: E402

QUICK = os.environ.get("KERAS_BATCHOPT_GUIDE_QUICK") == "1"
print("Keras", keras.__version__, "on backend:", keras.backend.backend())

data = load_dataset("digits")
x_train = data.x_train.reshape(len(data.x_train), 64) * 2.0 - 1.0  # in [-1, 1]
x_test = data.x_test.reshape(len(data.x_test), 64) * 2.0 - 1.0

"""
## A classifier to score the samples

Sample quality is scored with a small classifier trained on the real digits:
the classifier score `exp(E_x KL(p(y|x) || p(y)))` (the Inception Score with
a digits classifier) is high when samples are recognisable digits (confident
`p(y|x)`) of all ten classes (a flat `p(y)`); it is at most 10.
"""

keras.utils.set_random_seed(0)
classifier = keras.Sequential(
    [
        keras.Input((64,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ]
)
classifier.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
classifier.fit(x_train, data.y_train, epochs=40, batch_size=64, verbose=0)
_, accuracy = classifier.evaluate(x_test, data.y_test, verbose=0)


def classifier_score(images):
    p = np.asarray(classifier.predict(images, batch_size=500, verbose=0), "float64")
    p = np.clip(p, 1e-12, 1.0)
    marginal = p.mean(axis=0)
    return float(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(marginal)), axis=1))))


print(f"classifier test accuracy {accuracy:.3f}")
print(f"classifier score of the real test digits {classifier_score(x_test):.2f}")

"""
## The diffusion model

A DDPM with 200 steps and a linear schedule of `beta_t` from 1e-4 to 0.05
(`abar_T` = 0.007), an MLP denoiser that sees the noisy image and a sinusoidal
embedding of `t`, trained with the mean squared error on `e`. The batches are
built on the host, so the exact assignment is one call per batch.
"""

T = 200
betas = np.linspace(1e-4, 0.05, T)
alphas = 1.0 - betas
alpha_bars = np.cumprod(alphas)
BATCH = 128
STEPS = 400 if QUICK else 3000
EVAL_EVERY = 200 if QUICK else 500


def time_features(t):
    freqs = np.exp(np.linspace(0.0, np.log(100.0), 8))
    angles = (t[:, None] / T) * freqs[None, :] * np.pi
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype("float32")


def denoiser():
    image, time_in = keras.Input((64,)), keras.Input((16,))
    h = keras.layers.Concatenate()([image, time_in])
    for _ in range(3):
        h = keras.layers.Dense(256, activation="silu")(h)
    return keras.Model([image, time_in], keras.layers.Dense(64)(h))


def batches(rng, count, assign):
    """`count` training batches: ((x_t, time features), noise)."""
    xs, ts, es = [], [], []
    for _ in range(count):
        x0 = x_train[rng.integers(0, len(x_train), BATCH)]
        noise = rng.normal(size=x0.shape).astype("float32")
        if assign:
            noise = strategies.assign_noise(x0, noise)
        t = rng.integers(0, T, BATCH)  # after the assignment, as officially
        ab = alpha_bars[t][:, None]
        xs.append(np.sqrt(ab) * x0 + np.sqrt(1.0 - ab) * noise)
        ts.append(time_features(t))
        es.append(noise)
    return [np.concatenate(xs), np.concatenate(ts)], np.concatenate(es)


def sample(model, count, seed):
    """DDPM ancestral sampling, sigma_t^2 = beta_t."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, 64)).astype("float32")
    for t in range(T - 1, -1, -1):
        features = time_features(np.full(count, t))
        e = np.asarray(model.predict_on_batch([x, features]))
        x = (x - betas[t] / np.sqrt(1.0 - alpha_bars[t]) * e) / np.sqrt(alphas[t])
        if t > 0:
            x = x + np.sqrt(betas[t]) * rng.normal(size=x.shape)
        x = x.astype("float32")
    return np.clip(x, -1.0, 1.0)


# A fixed evaluation set with random pairing: the plain denoising loss.
eval_rng = np.random.default_rng(123)
eval_inputs, eval_noise = batches(eval_rng, 4, assign=False)

"""
## Training with and without the assignment

Both runs use the same seeds, so they see the same images, the same noise
samples and the same timesteps; only the pairing of noise to images differs.
"""


def train(assign, seed):
    keras.utils.set_random_seed(seed)
    model = denoiser()
    model.compile(keras.optimizers.Adam(1e-3), "mse")
    rng = np.random.default_rng(seed)
    history, spent = [], 0.0
    for step in range(EVAL_EVERY, STEPS + 1, EVAL_EVERY):
        start = time.perf_counter()
        inputs, targets = batches(rng, EVAL_EVERY, assign)
        spent += time.perf_counter() - start
        model.fit(inputs, targets, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        loss = model.evaluate(eval_inputs, eval_noise, verbose=0)
        score = classifier_score(sample(model, 200 if QUICK else 500, seed=seed))
        history.append((step, loss, score))
    return history, spent


SEEDS = [0]
results = {}
for assign in (False, True):
    for seed in SEEDS:
        start = time.perf_counter()
        results[assign, seed] = train(assign, seed)
        total = time.perf_counter() - start
        name = "assigned" if assign else "random"
        print(f"{name} pairing, seed {seed}: {total:.0f} s", end="")
        print(f" (batch building {results[assign, seed][1]:.1f} s)")

print("\n| steps | pairing | denoising loss | classifier score |")
print("|---|---|---|---|")
for i, step in enumerate(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY)):
    for assign in (False, True):
        loss = np.mean([results[assign, s][0][i][1] for s in SEEDS])
        score = np.mean([results[assign, s][0][i][2] for s in SEEDS])
        name = "assigned" if assign else "random"
        print(f"| {step} | {name} | {loss:.4f} | {score:.2f} |")

TARGET = 4.5
for assign in (False, True):
    reached = []
    for s in SEEDS:
        steps = [step for step, _, score in results[assign, s][0] if score >= TARGET]
        reached.append(steps[0] if steps else None)
    name = "assigned" if assign else "random"
    print(f"{name} pairing: steps to a classifier score of {TARGET}: {reached}")

"""
## What we measured

One run of the full guide on JAX (3,000 steps of batch 128, seed 0; 500
samples scored at each evaluation; the classifier reaches 0.960 test accuracy
and scores the real test digits at 8.75):

| steps | pairing | denoising loss | classifier score |
|---|---|---|---|
| 500 | random | 0.2280 | 4.55 |
| 500 | assigned | 0.2366 | 3.76 |
| 1000 | random | 0.2091 | 4.50 |
| 1000 | assigned | 0.2178 | 3.50 |
| 1500 | random | 0.1974 | 5.11 |
| 1500 | assigned | 0.2067 | 3.96 |
| 2000 | random | 0.1939 | 5.20 |
| 2000 | assigned | 0.2057 | 3.45 |
| 2500 | random | 0.1925 | 4.74 |
| 2500 | assigned | 0.2022 | 3.54 |
| 3000 | random | 0.1895 | 4.93 |
| 3000 | assigned | 0.1998 | 3.63 |

**Here the assignment does not help; it hurts.** With random pairing the
samples reach a classifier score of 4.5 after 500 steps; with the exact
assignment they never do within 3,000 steps (best 3.96), and the plain
denoising loss (random pairing at evaluation) stays about 0.01 higher. One
seed, one small MLP and 8 x 8 images: this says nothing about the U-Nets and
image sizes of the papers, only that the assignment is not a free win on
every diffusion model. One possible reason, not tested here: with 64 pixels and
batches of 128, the assignment moves each noise sample a long way towards its
image, so the model is trained on a noise distribution conditioned on the
image that the sampler, starting from pure Gaussian noise, does not
reproduce. (The run that printed the table had a target of 8.0, which
neither reached; the steps to 4.5 above are read off the table.)

The exact assignment costs time on the host: building the 3,000 assigned
batches took 447 s against 10 s for random pairing, about 0.15 s per batch of
128, on a machine shared with other jobs (this process got 14% of a core).

## Using it in your own training

- Exact assignment, in the input pipeline: draw the noise for a batch, then
  `noise = keras_batchopt.strategies.assign_noise(images, noise)` (NumPy in,
  NumPy out; SciPy's solver when SciPy is installed, else a NumPy one), then
  sample the timesteps.
- Inside a compiled train step: `noise = strategies.sample_nearest_noise(images,
  k=64, seed=self.seed_generator)`; the official KNN code uses k = 64.
- The paper's speed-ups are reported on CIFAR-10, CelebA and ImageNet with
  U-Nets and Stable Diffusion; a two-minute MLP on 8 x 8 digits is a check
  that the pieces work, not a replication.
"""
