"""The main job, `keras-batchopt compare`: statistics, runs, option checks.

The quick runs train on scikit-learn's bundled digits (offline) on the
backend in `KERAS_BACKEND`, in-process, and check what they print and
write. The statistics are checked against values computed by hand (closed
forms of the t distribution for 1 and 2 degrees of freedom) and published
t tables. The option tests check that every mistake ends with a clear
error and exit status 2.
"""

import csv
import importlib.util
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from keras_batchopt.src.compare import catalog
from keras_batchopt.src.compare import cli
from keras_batchopt.src.compare import data
from keras_batchopt.src.compare import models
from keras_batchopt.src.compare import report
from keras_batchopt.src.compare import runner
from keras_batchopt.src.compare import stats
from tests.conftest import BACKEND

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
PACKAGE_OPTIMIZERS = (
    "adan",
    "lamb",
    "lars",
    "sgd_sai",
    "sink_gd",
    "adagrad_norm",
    "ada_hessian",
)
KERAS_OPTIMIZERS = ("adam", "adamw", "sgd", "lion", "keras_lamb")


def run_cli(argv, capsys):
    """Runs the command in-process; returns (exit code, stdout, stderr)."""
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# Statistics --------------------------------------------------------------


def test_mean_and_sample_std():
    mean, std = stats.mean_std([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    # Squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, over n - 1 = 3.
    assert std == pytest.approx(math.sqrt(5.0 / 3.0), rel=1e-12)
    assert math.isnan(stats.mean_std([7.0])[1])
    with pytest.raises(ValueError, match="at least one"):
        stats.mean_std([])


@pytest.mark.parametrize("t", [-3.0, -0.5, 0.0, 0.7, 4.0])
def test_t_cdf_matches_closed_forms(t):
    # df = 1 is the Cauchy distribution; df = 2 has an algebraic CDF.
    cauchy = 0.5 + math.atan(t) / math.pi
    assert stats.t_cdf(t, 1) == pytest.approx(cauchy, abs=1e-12)
    two = 0.5 + t / (2.0 * math.sqrt(2.0 + t * t))
    assert stats.t_cdf(t, 2) == pytest.approx(two, abs=1e-12)


@pytest.mark.parametrize(
    "df, quantile",
    # 0.975 quantiles, six decimals, from the standard t table.
    [
        (1, 12.706205),
        (2, 4.302653),
        (3, 3.182446),
        (4, 2.776445),
        (10, 2.228139),
        (30, 2.042272),
    ],
)
def test_t_quantile_matches_table(df, quantile):
    assert stats.t_quantile(0.975, df) == pytest.approx(quantile, abs=1e-6)
    assert stats.t_quantile(0.025, df) == pytest.approx(-quantile, abs=1e-6)


def test_confidence_interval_by_hand():
    # Mean 2, sd 1, n 3: 2 -+ t(0.975, 2) / sqrt(3) = 2 -+ 2.484138.
    low, high = stats.confidence_interval([1.0, 2.0, 3.0])
    assert low == pytest.approx(2.0 - 2.484138, abs=1e-6)
    assert high == pytest.approx(2.0 + 2.484138, abs=1e-6)
    assert stats.confidence_interval([1.0]) is None


def test_welch_test_by_hand():
    # Means 1 and 4, variances 2 and 2, n = 2 each: t = -3 / sqrt(2),
    # df = 2, and the df = 2 CDF gives p = 1 - t / sqrt(2 + t^2).
    t, df, p = stats.welch_test([0.0, 2.0], [3.0, 5.0])
    assert t == pytest.approx(-3.0 / math.sqrt(2.0), abs=1e-12)
    assert df == pytest.approx(2.0, abs=1e-12)
    assert p == pytest.approx(1.0 - 2.12132034 / math.sqrt(6.5), abs=1e-8)
    # Unequal sizes and variances: va = 1/3, vb = 5/12, t = -3.5 / sqrt(0.75),
    # df = 0.75^2 / ((1/3)^2 / 2 + (5/12)^2 / 3) = 4.959184.
    t, df, p = stats.welch_test([1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0])
    assert t == pytest.approx(-3.5 / math.sqrt(0.75), abs=1e-12)
    assert df == pytest.approx(0.5625 / (1 / 18 + 25 / 432), abs=1e-12)
    assert p == pytest.approx(0.0100769433, abs=1e-9)
    assert stats.welch_test([1.0, 2.0], [2.0, 1.0])[2] == pytest.approx(1.0)


def test_welch_test_degenerate_samples():
    assert stats.welch_test([1.0], [1.0, 2.0]) is None
    assert stats.welch_test([1.0, 1.0], [1.0, 1.0])[2] == 1.0
    assert stats.welch_test([1.0, 1.0], [2.0, 2.0])[2] == 0.0


def fake_result(name, accuracies, losses, group=None):
    runs = [
        dict(
            test_accuracy=a,
            test_loss=loss,
            steps_to_target=None,
            ms_per_step=1.0,
            curves=dict(
                step=[0, 1],
                epoch=[0.0, 1.0],
                train_loss=[None, loss],
                test_loss=[2.0, loss],
                test_accuracy=[0.1, a],
            ),
        )
        for a, loss in zip(accuracies, losses)
    ]
    result = dict(name=name, group=group, runs=runs)
    result.update(report.summarize_runs(runs))
    return result


def test_significance_against_named_baseline_and_best():
    rows = [
        fake_result("a", [0.90, 0.91, 0.92], [0.30, 0.31, 0.32]),
        fake_result("b", [0.95, 0.96, 0.97], [0.30, 0.35, 0.40]),
        fake_result("c", [0.905, 0.915, 0.925], [0.30, 0.30, 0.30]),
    ]
    rep = dict(config=dict(baseline="a"), results=rows)
    report.add_significance(rep)
    assert rows[0]["vs_baseline"] is None
    b = rows[1]["vs_baseline"]["test_accuracy"]
    assert b["difference"] == pytest.approx(0.05)
    # Equal variances 1e-4, n = 3: t = 0.05 / sqrt(2e-4 / 3), df = 4.
    assert b["t"] == pytest.approx(0.05 / math.sqrt(2e-4 / 3))
    assert b["df"] == pytest.approx(4.0)
    assert b["significant"]
    assert not rows[2]["vs_baseline"]["test_accuracy"]["significant"]
    assert rep["config"]["significance"]["test"] == stats.TEST_NAME

    rep = dict(config=dict(baseline="best"), results=rows)
    report.add_significance(rep)
    assert [r["baseline"] for r in rows] == ["b", "b", "b"]
    assert rows[1]["vs_baseline"] is None


def test_json_has_no_nan(tmp_path):
    path = report.write_json({"x": [math.nan, 1.0, math.inf]}, tmp_path / "r")
    assert json.loads(path.read_text()) == {"x": [None, 1.0, None]}


# Catalog and models ------------------------------------------------------


def test_every_optimizer_is_selectable_and_builds():
    assert set(runner.OPTIMIZERS) == set(PACKAGE_OPTIMIZERS + KERAS_OPTIMIZERS)
    for name in runner.OPTIMIZERS:
        optimizer = runner.make_optimizer(name, learning_rate=0.01, seed=1)
        assert float(np.asarray(optimizer.learning_rate)) == pytest.approx(0.01)
    from keras_batchopt import optimizers

    assert isinstance(runner.make_optimizer("lamb"), optimizers.Lamb)
    assert not isinstance(runner.make_optimizer("keras_lamb"), optimizers.Lamb)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cnn", "transformer"])
def test_every_layer_builds_and_runs(model):
    x = np.random.default_rng(0).uniform(size=(4, 8, 8)).astype("float32")
    for layer in catalog.layers_for(model):
        context = catalog.LayerContext(batch_size=4, total_steps=10)
        net = models.build_model(model, (8, 8), 10, layer, context)
        y = net(runner._model_inputs(net, x), training=True)
        assert tuple(y.shape) == (4, 10), layer


def test_unknown_names_in_python_api():
    with pytest.raises(ValueError, match="Expected one of: adan"):
        runner.make_optimizer("adamx")
    with pytest.raises(ValueError, match="Unknown dataset"):
        data.resolve_name("cifar10")
    with pytest.raises(ValueError, match="Unknown model"):
        runner.build_model("resnet", (8, 8), 10)
    with pytest.raises(ValueError, match="Expected one of: batch_norm"):
        catalog.check_layer_names(["bcn_ws"], "transformer")


# Quick runs --------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SKLEARN, reason="digits needs scikit-learn")
def test_quick_run_with_seeds(tmp_path, capsys):
    argv = [
        "compare",
        "--quick",
        "--dataset=digits",
        "--seeds=2",
        "--optimizers=adan,ada_hessian",
        f"--output-dir={tmp_path}",
    ]
    code, out, _ = run_cli(argv, capsys)
    assert code == 0
    assert f"backend: {BACKEND}" in out
    assert "ada_hessian, seed 1" in out
    header = next(line for line in out.splitlines() if "test acc" in line)
    for column in (
        "optimizer",
        "95% CI",
        "diff acc",
        "steps to 95%",
        "ms/step",
    ):
        assert column in header
    assert stats.TEST_NAME in out
    rows = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert "adan" in rows and "ada_hessian" in rows

    rep = json.loads((tmp_path / "results.json").read_text())
    assert rep["versions"]["backend"] == BACKEND
    assert rep["config"]["seeds"] == [0, 1]
    assert rep["config"]["baseline"] == "best"  # adam is not compared
    results = rep["results"]
    assert [r["optimizer"] for r in results] == ["adan", "ada_hessian"]
    for r in results:
        accuracies = [run["test_accuracy"] for run in r["runs"]]
        assert len(accuracies) == 2
        assert r["test_accuracy"] == pytest.approx(np.mean(accuracies))
        assert r["test_accuracy_std"] == pytest.approx(
            np.std(accuracies, ddof=1)
        )
        low, high = r["test_accuracy_ci95"]
        assert low <= r["test_accuracy"] <= high
        assert r["ms_per_step"] > 0
        curves = r["curves"]
        assert len(curves["test_accuracy_mean"]) == len(curves["step"])
    tested = [r for r in results if r["vs_baseline"] is not None]
    assert len(tested) == 1
    assert 0.0 <= tested[0]["vs_baseline"]["test_accuracy"]["p"] <= 1.0
    # Same seed, same initial weights: the evaluation before training.
    first = [
        [run["curves"]["test_accuracy"][0] for run in r["runs"]]
        for r in results
    ]
    assert first[0] == first[1] and first[0][0] != first[0][1]

    with open(tmp_path / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [row["name"] for row in table] == ["adan", "ada_hessian"]
    assert (tmp_path / "table.txt").read_text().startswith("optimizer")
    png = tmp_path / "curves.png"
    if HAS_MATPLOTLIB:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "Skipped curves.png" in out


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SKLEARN, reason="digits needs scikit-learn")
def test_quick_layers_run(tmp_path, capsys):
    argv = [
        "compare",
        "--quick",
        "--dataset=digits",
        "--layers=batch_norm,bcn_ws",
        "--batch-sizes=8,64",
        "--train-size=64",
        "--seeds=1",
        f"--output-dir={tmp_path}",
    ]
    code, out, _ = run_cli(argv, capsys)
    assert code == 0
    rep = json.loads((tmp_path / "results.json").read_text())
    assert rep["mode"] == "layers"
    assert rep["config"]["model"] == "cnn"
    names = [(r["batch_size"], r["name"]) for r in rep["results"]]
    assert names == [
        (8, "batch_norm"),
        (8, "bcn_ws"),
        (64, "batch_norm"),
        (64, "bcn_ws"),
    ]
    for r in rep["results"]:
        assert r["optimizer"] == "adam"
        assert r["baseline"] == "batch_norm"
        assert 0.0 <= r["test_accuracy"] <= 1.0
    assert "One seed" in out


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SKLEARN, reason="digits needs scikit-learn")
def test_tune_uses_a_validation_split(tmp_path, capsys, monkeypatch):
    seen = []
    original = runner._train_run

    def spy(job, entry, rate, seed, ds=None, **kwargs):
        seen.append((rate, len((ds or job.ds).y_test)))
        return original(job, entry, rate, seed, ds, **kwargs)

    monkeypatch.setattr(runner, "_train_run", spy)
    argv = [
        "compare",
        "--quick",
        "--dataset=digits",
        "--optimizers=adam",
        "--tune-grid=0.5,2",
        "--train-size=200",
        "--test-size=100",
        "--seeds=1",
        f"--output-dir={tmp_path}",
    ]
    code, out, _ = run_cli(argv, capsys)
    assert code == 0
    # Two tuning runs scored on 40 held-out training examples, then the
    # final run on the 100 test examples.
    assert seen[:2] == [(5e-4, 40), (2e-3, 40)]
    assert seen[2][1] == 100
    rep = json.loads((tmp_path / "results.json").read_text())
    tuning = rep["results"][0]["tuning"]
    assert [t["learning_rate"] for t in tuning["trials"]] == [5e-4, 2e-3]
    assert rep["results"][0]["learning_rate"] == tuning["chosen"]
    assert seen[2][0] == tuning["chosen"]
    assert rep["config"]["tuning"]["validation_size"] == 40
    assert "validation split" in out


# Bad input ---------------------------------------------------------------


def assert_clean_error(code, err, message):
    assert code == 2
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("keras-batchopt compare: error:")
    assert message in last


def test_unknown_optimizer_lists_allowed_names(capsys):
    code, _, err = run_cli(["compare", "--optimizers=adan,adamx"], capsys)
    assert_clean_error(code, err, "'adamx'")
    for name in runner.OPTIMIZERS:
        assert name in err.splitlines()[-1]


def test_unknown_layer_lists_allowed_names(capsys):
    code, _, err = run_cli(["compare", "--layers=ghost_bn,bn2"], capsys)
    assert_clean_error(code, err, "'bn2'")
    for name in catalog.layers_for("cnn"):
        assert name in err.splitlines()[-1]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--seeds=0"], "integer >= 1, got '0'"),
        (["--seeds=two"], "integer >= 1"),
        (["--epochs=-1"], "integer >= 1, got '-1'"),
        (["--epochs=0"], "integer >= 1"),
        (["--tune-grid="], "at least one value"),
        (["--tune-grid=,"], "at least one value"),
        (["--tune-grid=1,-2"], "a factor > 0, got '-2'"),
        (["--batch-sizes=0", "--layers"], "an integer > 0"),
        (["--lr=adan"], "NAME=VALUE"),
        (["--lr=adan=-1"], "learning rate > 0"),
        (["--lr=nadam=0.1"], "Expected one of"),
        (["--lr=lion=1e-4"], "not in --optimizers"),
        (["--optimizers=adam,adam"], "duplicate"),
        (["--optimizers=,"], "at least one"),
        (["--dataset=cifar10"], "invalid choice"),
        (["--target-accuracy=95"], "(0, 1]"),
        (["--baseline=lion"], "is not in --optimizers"),
        (["--layers", "--tune"], "--tune is for comparing optimizers"),
        (["--layers", "--optimizers=adam,adan"], "one optimizer"),
        (["--layers", "--model=mlp"], "cnn or transformer"),
        (["--layers=bcn_ws", "--model=transformer"], "'bcn_ws'"),
        (["--batch-sizes=8,64"], "goes with --layers"),
    ],
)
def test_bad_options_give_clear_errors(argv, message, capsys):
    code, _, err = run_cli(["compare", *argv], capsys)
    assert_clean_error(code, err, message)


def test_unwritable_output_dir(tmp_path, capsys):
    # A path below a file can never be created, whatever the user's rights.
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = ["compare", f"--output-dir={blocker / 'out'}"]
    code, _, err = run_cli(argv, capsys)
    assert_clean_error(code, err, "Cannot write the results to --output-dir")


def test_missing_matplotlib_skips_png(tmp_path, monkeypatch):
    # A None entry in sys.modules makes the import raise ImportError.
    names = [m for m in sys.modules if m.split(".")[0] == "matplotlib"]
    for name in {"matplotlib", "matplotlib.figure", *names}:
        monkeypatch.setitem(sys.modules, name, None)
    rep = {"results": [], "config": {}, "versions": {}, "dataset": {}}
    assert runner.plot_curves(rep, str(tmp_path / "c.png")) is None
    assert not (tmp_path / "c.png").exists()


def test_unavailable_dataset_says_how_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(data, "_fashion_mnist_installed", lambda *a: False)
    argv = ["compare", "--dataset=fashion_mnist", f"--output-dir={tmp_path}"]
    code, _, err = run_cli(argv, capsys)
    assert code == 1
    assert "apt-get install dataset-fashion-mnist" in err
    assert data.resolve_name("auto") == "digits"


@pytest.mark.skipif(not HAS_SKLEARN, reason="digits needs scikit-learn")
def test_digits_subset_is_exact_stratified_and_scaled():
    ds = data.load_dataset("digits", train_size=200, test_size=100, seed=3)
    assert ds.x_train.shape == (200, 8, 8)
    assert ds.x_test.shape == (100, 8, 8)
    assert ds.x_train.dtype == np.float32
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    counts = np.bincount(ds.y_train, minlength=10)
    assert counts.min() >= 19 and counts.max() <= 21
    again = data.load_dataset("digits", train_size=200, test_size=100, seed=3)
    np.testing.assert_array_equal(ds.y_train, again.y_train)


def test_module_entry_point_shows_help():
    result = subprocess.run(
        [sys.executable, "-m", "keras_batchopt", "compare", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for option in ("--optimizers", "--seeds", "--tune-grid", "--layers"):
        assert option in result.stdout
    assert "Welch" in result.stdout
