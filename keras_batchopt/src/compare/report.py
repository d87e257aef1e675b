"""Reports of the compare job: header, table, curves, JSON and CSV.

matplotlib is imported inside `plot_curves()` and is optional.
"""

import csv
import importlib.metadata
import json
import platform

import keras
import numpy as np

from keras_batchopt.src.version import __version__


def environment():
    """Returns the backend and the versions of the libraries in use."""
    backend = keras.backend.backend()
    versions = {
        "backend": backend,
        "keras_batchopt": __version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    dists = {
        "tensorflow": ("tensorflow", "tensorflow-cpu"),
        "jax": ("jax", "jaxlib"),
        "torch": ("torch",),
    }.get(backend, ())
    for dist in dists:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def format_header(report):
    """Returns the lines printed before training."""
    v = report["versions"]
    libs = ", ".join(
        f"{k} {v[k]}"
        for k in ("tensorflow", "tensorflow-cpu", "jax", "jaxlib", "torch")
        if k in v
    )
    d, c = report["dataset"], report["config"]
    shape = "x".join(str(s) for s in d["image_shape"])
    return "\n".join(
        [
            f"keras_batchopt {v['keras_batchopt']} compare",
            f"backend: {v['backend']} ({libs}) | keras {v['keras']} | "
            f"numpy {v['numpy']} | python {v['python']}",
            f"dataset: {d['name']} (train {d['train_size']}, test "
            f"{d['test_size']}, {shape}, {d['num_classes']} classes) "
            f"from {d['source']}",
            f"model: {c['model']} ({c['parameters']:,} parameters) | "
            f"epochs {c['epochs']} | batch size {c['batch_size']} "
            f"({c['steps_per_epoch']} steps/epoch) | "
            f"test evaluations per epoch: {c['evals_per_epoch']} | "
            f"seed {c['seed']}",
        ]
    )


def format_table(report):
    """Returns the results as a plain-text table with aligned columns."""
    target = report["config"]["target_accuracy"]
    headers = [
        "optimizer",
        "test loss",
        "test acc",
        f"steps to {target:.0%}",
        "ms/step",
        "settings",
    ]
    rows = []
    for r in report["results"]:
        rows.append(
            [
                r["optimizer"],
                f"{r['test_loss']:.4f}",
                f"{r['test_accuracy']:.4f}",
                "not reached"
                if r["steps_to_target"] is None
                else str(r["steps_to_target"]),
                "n/a"
                if r["ms_per_step"] is None
                else f"{r['ms_per_step']:.2f}",
                r["settings"],
            ]
        )
    widths = [max(len(row[i]) for row in [headers] + rows) for i in range(6)]
    numeric = (False, True, True, True, True, False)

    def line(cells):
        return "  ".join(
            cell.rjust(w) if right else cell.ljust(w)
            for cell, w, right in zip(cells, widths, numeric)
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    timed = "after the first epoch"
    if report["config"]["epochs"] == 1:
        timed = "in the one epoch, first evaluation interval left out"
    out.append(
        "Test metrics after the last step; steps to target counted at test "
        f"evaluations; ms/step: median step time {timed}."
    )
    return "\n".join(out)


def plot_curves(report, path):
    """Saves test accuracy and training loss against steps as a PNG.

    Returns:
        `path`, or `None` when matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(11, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax_acc, ax_loss = fig.subplots(1, 2)
    for r in report["results"]:
        c = r["curves"]
        ax_acc.plot(c["step"], c["test_accuracy"], label=r["optimizer"])
        ax_loss.plot(c["step"][1:], c["train_loss"][1:], label=r["optimizer"])
    target = report["config"]["target_accuracy"]
    ax_acc.axhline(target, color="gray", linestyle="--", linewidth=1)
    ax_acc.set(xlabel="training step", ylabel="test accuracy")
    ax_loss.set(xlabel="training step", ylabel="training loss")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend()
    v, d = report["versions"], report["dataset"]
    fig.suptitle(
        f"{d['name']}, {report['config']['model']}, backend {v['backend']}"
    )
    fig.savefig(path, dpi=120)
    return path


def write_json(report, path):
    with open(path, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")


def write_csv(report, path):
    fields = [
        "optimizer",
        "test_loss",
        "test_accuracy",
        "steps_to_target",
        "ms_per_step",
        "settings",
    ]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(report["results"])
