"""Reports of the compare job: statistics, header, table, curves, files.

matplotlib is imported inside `plot_curves()` and is optional.
"""

import csv
import importlib.metadata
import json
import math
import platform

import keras
import numpy as np

from keras_batchopt.src.compare import stats
from keras_batchopt.src.version import __version__

# The final metrics that get a mean, spread, interval and test.
METRICS = ("test_accuracy", "test_loss")


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


def describe(settings):
    """`{"learning_rate": 0.001}` -> `"learning_rate=0.001"`."""
    parts = []
    for key, value in settings.items():
        if isinstance(value, float):
            value = f"{value:g}"
        parts.append(f"{key}={value}")
    return ", ".join(parts)


def summarize_runs(runs):
    """Mean, standard deviation and 95% interval of each final metric.

    Args:
        runs: dicts with `test_accuracy`, `test_loss`, `steps_to_target`,
            `ms_per_step` and `curves`, one per seed.

    Returns:
        A dict with `<metric>` (the mean), `<metric>_std`, `<metric>_ci95`
        (`[low, high]` or `None` for one seed) for each of `METRICS`;
        `steps_to_target` (mean over the seeds that reached it, or `None`)
        and `reached` (how many did); `ms_per_step` (median over seeds);
        `curves`, the mean and standard deviation of each curve.
    """
    out = {}
    for metric in METRICS:
        values = [r[metric] for r in runs]
        out[metric], out[f"{metric}_std"] = stats.mean_std(values)
        interval = stats.confidence_interval(values)
        out[f"{metric}_ci95"] = None if interval is None else list(interval)
    reached = [r["steps_to_target"] for r in runs if r["steps_to_target"]]
    out["steps_to_target"] = float(np.mean(reached)) if reached else None
    out["reached"] = len(reached)
    timed = [r["ms_per_step"] for r in runs if r["ms_per_step"] is not None]
    out["ms_per_step"] = float(np.median(timed)) if timed else None
    out["curves"] = _mean_curves([r["curves"] for r in runs])
    return out


def _mean_curves(curves):
    out = {"step": curves[0]["step"], "epoch": curves[0]["epoch"]}
    for key in ("train_loss", "test_loss", "test_accuracy"):
        table = np.array(
            [[np.nan if v is None else v for v in c[key]] for c in curves],
            dtype="float64",
        )
        out[f"{key}_mean"] = np.mean(table, axis=0).tolist()
        std = np.std(table, axis=0, ddof=1) if len(curves) > 1 else None
        out[f"{key}_std"] = None if std is None else std.tolist()
    return out


def _best(rows):
    def score(r):
        loss = r["test_loss"]
        if not math.isfinite(loss):
            return (-1.0, 0.0)
        return (r["test_accuracy"], -loss)

    return max(rows, key=score)


def add_significance(report):
    """Tests every result against its group's baseline, in place.

    The baseline is `report["config"]["baseline"]`, a result name or
    `"best"` (the highest mean test accuracy, ties broken by the lower
    loss). Each other result gets `vs_baseline`: per metric, the
    difference of means, Welch's t, degrees of freedom, two-sided p and
    `significant` (p < `stats.ALPHA`); `None` entries with one seed.
    """
    wanted = report["config"]["baseline"]
    report["config"]["significance"] = {
        "test": stats.TEST_NAME,
        "alpha": stats.ALPHA,
        "metrics": list(METRICS),
    }
    groups = {}
    for r in report["results"]:
        groups.setdefault(r["group"], []).append(r)
    for rows in groups.values():
        named = [r for r in rows if r["name"] == wanted]
        base = named[0] if named else _best(rows)
        for r in rows:
            r["baseline"] = base["name"]
            r["vs_baseline"] = None if r is base else _compare(r, base)


def _compare(row, base):
    out = {}
    for metric in METRICS:
        a = [run[metric] for run in row["runs"]]
        b = [run[metric] for run in base["runs"]]
        test = stats.welch_test(a, b)
        if test is None or not all(map(math.isfinite, a + b)):
            out[metric] = None
            continue
        t, df, p = test
        out[metric] = dict(
            difference=row[metric] - base[metric],
            t=t,
            df=df,
            p=p,
            significant=p < stats.ALPHA,
        )
    return out


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
    seeds = c["seeds"]
    if report["mode"] == "layers":
        batch = "batch sizes " + ", ".join(map(str, c["batch_sizes"]))
        what = f"{c['model']} with each layer | optimizer {c['optimizer']}"
    else:
        batch = f"batch size {c['batch_size']}"
        what = f"{c['model']} ({c['parameters']:,} parameters)"
    return "\n".join(
        [
            f"keras_batchopt {v['keras_batchopt']} compare ({report['mode']})",
            f"backend: {v['backend']} ({libs}) | keras {v['keras']} | "
            f"numpy {v['numpy']} | python {v['python']}",
            f"dataset: {d['name']} (train {d['train_size']}, test "
            f"{d['test_size']}, {shape}, {d['num_classes']} classes) "
            f"from {d['source']}",
            f"model: {what} | epochs {c['epochs']} | {batch} | "
            f"{len(seeds)} seed(s): {', '.join(map(str, seeds))}",
        ]
    )


def _pm(mean, std, digits=4):
    if not math.isfinite(mean):
        return "nan"
    if std is None or not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} +- {std:.{digits}f}"


def _test_cells(r, metric):
    """(difference, p) cells; `*` marks a significant difference."""
    if r["vs_baseline"] is None:
        return "baseline", ""
    test = r["vs_baseline"][metric]
    if test is None:
        return "n/a", "n/a"
    mark = " *" if test["significant"] else "  "
    return f"{test['difference']:+.4f}{mark}", f"{test['p']:.3f}"


def _row(r, report):
    ci = r["test_accuracy_ci95"]
    acc_diff, acc_p = _test_cells(r, "test_accuracy")
    loss_diff, loss_p = _test_cells(r, "test_loss")
    n = len(r["runs"])
    steps = "not reached"
    if r["steps_to_target"] is not None:
        steps = f"{r['steps_to_target']:.0f} ({r['reached']}/{n})"
    cells = [r["name"]]
    if report["mode"] == "layers":
        cells = [str(r["batch_size"]), r["name"]]
    return cells + [
        f"{r['learning_rate']:.3g}",
        _pm(r["test_accuracy"], r["test_accuracy_std"]),
        "n/a" if ci is None else f"[{ci[0]:.4f}, {ci[1]:.4f}]",
        acc_diff,
        acc_p,
        _pm(r["test_loss"], r["test_loss_std"]),
        loss_diff,
        loss_p,
        steps,
        "n/a" if r["ms_per_step"] is None else f"{r['ms_per_step']:.2f}",
    ]


def format_table(report):
    """Returns the results as a plain-text table with aligned columns."""
    c = report["config"]
    layers = report["mode"] == "layers"
    headers = ["batch", "layer"] if layers else ["optimizer"]
    headers += [
        "lr",
        "test acc (mean +- sd)",
        "95% CI",
        "diff acc",
        "p",
        "test loss (mean +- sd)",
        "diff loss",
        "p",
        f"steps to {c['target_accuracy']:.0%}",
        "ms/step",
    ]
    rows = [_row(r, report) for r in report["results"]]
    widths = [max(map(len, column)) for column in zip(headers, *rows)]
    left = 2 if layers else 1

    def line(cells):
        return "  ".join(
            cell.ljust(w) if i < left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells, widths))
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    return "\n".join(out + _notes(report))


def _notes(report):
    c = report["config"]
    n = len(c["seeds"])
    bases = sorted({r["baseline"] for r in report["results"]})
    where = " within each batch size" if report["mode"] == "layers" else ""
    timed = "after the first epoch"
    if c["epochs"] == 1:
        timed = "in the one epoch, first evaluation interval left out"
    notes = [
        f"Final test metrics, mean +- sample standard deviation over {n} "
        f"seed(s); 95% CI: Student t interval of the mean accuracy.",
        f"diff: difference of the mean from the baseline ({', '.join(bases)}"
        f"{where}); p: {stats.TEST_NAME} (unequal variances), "
        f"* = significant at p < {stats.ALPHA:g}, uncorrected for the "
        f"number of comparisons.",
        "Steps to target: mean over the seeds that reached it (how many "
        f"did), counted at test evaluations; ms/step: median step time "
        f"{timed}.",
    ]
    tuning = c.get("tuning")
    if tuning:
        grid = ", ".join(f"{g:g}" for g in tuning["grid_factors"])
        notes.append(
            f"lr: tuned over x({grid}) of each default on a "
            f"{tuning['validation_fraction']:.0%} validation split of the "
            "training set (seed "
            f"{tuning['seed']}, best final validation accuracy); the test "
            "set played no part."
        )
    if n < 2:
        notes.append("One seed: no spread, interval or test.")
    return notes


def plot_curves(report, path):
    """Saves test accuracy and training loss curves as a PNG.

    Lines are means over seeds, shaded bands the mean -+ one standard
    deviation. In the layers mode each batch size gets a row, against
    epochs.

    Returns:
        `path`, or `None` when matplotlib is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    groups = {}
    for r in report["results"]:
        groups.setdefault(r["group"], []).append(r)
    x_key = "epoch" if report["mode"] == "layers" else "step"
    fig = Figure(figsize=(11, 4.2 * len(groups)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(groups), 2, squeeze=False)
    target = report["config"]["target_accuracy"]
    for (group, rows), (ax_acc, ax_loss) in zip(groups.items(), axes):
        for i, r in enumerate(rows):
            # Ten colours, then the same colours dashed, then dotted.
            style = dict(
                color=f"C{i % 10}", linestyle=("-", "--", ":")[i // 10 % 3]
            )
            for ax, key in ((ax_acc, "test_accuracy"), (ax_loss, "train_loss")):
                _band(ax, r["curves"], x_key, key, r["name"], style)
        ax_acc.axhline(target, color="gray", linestyle="--", linewidth=1)
        xlabel = "epoch" if x_key == "epoch" else "training step"
        title = f"{group}: " if group else ""
        ax_acc.set(xlabel=xlabel, ylabel="test accuracy", title=title)
        ax_loss.set(xlabel=xlabel, ylabel="training loss", title=title)
        for ax in (ax_acc, ax_loss):
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
    v, d = report["versions"], report["dataset"]
    n = len(report["config"]["seeds"])
    fig.suptitle(
        f"{d['name']}, {report['config']['model']}, backend {v['backend']}: "
        f"mean over {n} seed(s), band ±1 sd"
    )
    fig.savefig(path, dpi=120)
    return path


def _band(ax, curves, x_key, key, label, style):
    x = np.asarray(curves[x_key], dtype="float64")
    mean = np.asarray(curves[f"{key}_mean"], dtype="float64")
    start = 1 if key == "train_loss" else 0
    (line,) = ax.plot(x[start:], mean[start:], label=label, **style)
    if curves[f"{key}_std"] is not None:
        std = np.asarray(curves[f"{key}_std"], dtype="float64")
        ax.fill_between(
            x[start:],
            (mean - std)[start:],
            (mean + std)[start:],
            color=line.get_color(),
            alpha=0.2,
            linewidth=0,
        )


def _finite(value):
    """JSON has no NaN or infinity: they become `null`."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(report, path):
    with open(path, "w") as f:
        json.dump(_finite(report), f, indent=2, allow_nan=False)
        f.write("\n")
    return path


CSV_FIELDS = [
    "group",
    "name",
    "optimizer",
    "layer",
    "batch_size",
    "learning_rate",
    "seeds",
    "test_accuracy",
    "test_accuracy_std",
    "test_accuracy_ci95_low",
    "test_accuracy_ci95_high",
    "test_loss",
    "test_loss_std",
    "baseline",
    "accuracy_difference",
    "accuracy_p",
    "accuracy_significant",
    "loss_difference",
    "loss_p",
    "loss_significant",
    "steps_to_target",
    "reached",
    "ms_per_step",
    "settings",
]


def _csv_row(r):
    row = {k: r.get(k) for k in CSV_FIELDS}
    row["seeds"] = len(r["runs"])
    ci = r["test_accuracy_ci95"] or [None, None]
    row["test_accuracy_ci95_low"], row["test_accuracy_ci95_high"] = ci
    for metric, prefix in (
        ("test_accuracy", "accuracy"),
        ("test_loss", "loss"),
    ):
        test = (r["vs_baseline"] or {}).get(metric)
        if test is not None:
            row[f"{prefix}_difference"] = test["difference"]
            row[f"{prefix}_p"] = test["p"]
            row[f"{prefix}_significant"] = test["significant"]
    return _finite(row)


def write_csv(report, path):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(_csv_row(r) for r in report["results"])
    return path
