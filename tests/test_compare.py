"""The main job, `keras-batchopt compare`: a quick run and its option checks.

The quick run trains on scikit-learn's bundled digits (offline) on the
backend in `KERAS_BACKEND`, in-process, and checks what it prints and
writes. The option tests check that mistakes get a clear message.
"""

import csv
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from keras_batchopt.src.compare import cli
from keras_batchopt.src.compare import data
from keras_batchopt.src.compare import runner
from tests.conftest import BACKEND

HAS_SKLEARN = importlib.util.find_spec("sklearn") is not None
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def run_cli(argv, capsys):
    """Runs the command in-process; returns (exit code, stdout, stderr)."""
    try:
        code = cli.main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SKLEARN, reason="digits needs scikit-learn")
def test_quick_run_prints_table_and_writes_files(tmp_path, capsys):
    argv = [
        "compare",
        "--quick",
        "--dataset=digits",
        "--optimizers=adan,adam",
        f"--output-dir={tmp_path}",
    ]
    code, out, _ = run_cli(argv, capsys)
    assert code == 0
    assert f"backend: {BACKEND}" in out
    assert "Training with adan" in out and "Training with adam" in out
    header = next(line for line in out.splitlines() if "test acc" in line)
    for column in ("optimizer", "test loss", "steps to 95%", "ms/step"):
        assert column in header
    rows = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert "adan" in rows and "adam" in rows

    report = json.loads((tmp_path / "results.json").read_text())
    assert report["versions"]["backend"] == BACKEND
    assert report["dataset"]["name"] == "digits"
    assert report["config"]["epochs"] == 1
    results = report["results"]
    assert [r["optimizer"] for r in results] == ["adan", "adam"]
    for r in results:
        assert 0.0 <= r["test_accuracy"] <= 1.0
        assert np.isfinite(r["test_loss"])
        assert r["ms_per_step"] is not None and r["ms_per_step"] > 0
        assert len(r["curves"]["step"]) == len(r["curves"]["test_accuracy"])
    # Same initial weights: the evaluation before training is the same.
    first = [r["curves"]["test_accuracy"][0] for r in results]
    assert first[0] == first[1]

    with open(tmp_path / "results.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [row["optimizer"] for row in table] == ["adan", "adam"]

    png = tmp_path / "curves.png"
    if HAS_MATPLOTLIB:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert not png.exists()
        assert "Skipped curves.png" in out


def test_missing_matplotlib_skips_png(tmp_path, monkeypatch):
    # A None entry in sys.modules makes the import raise ImportError.
    names = [m for m in sys.modules if m.split(".")[0] == "matplotlib"]
    for name in {"matplotlib", "matplotlib.figure", *names}:
        monkeypatch.setitem(sys.modules, name, None)
    report = {"results": [], "config": {}, "versions": {}, "dataset": {}}
    assert runner.plot_curves(report, str(tmp_path / "c.png")) is None
    assert not (tmp_path / "c.png").exists()


def test_unknown_optimizer_lists_allowed_names(capsys):
    code, _, err = run_cli(["compare", "--optimizers=adan,adamx"], capsys)
    assert code == 2
    assert "'adamx'" in err
    for name in runner.OPTIMIZERS:
        assert name in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lr=adan"], "NAME=VALUE"),
        (["--lr=adan=-1"], "learning rate > 0"),
        (["--lr=nadam=0.1"], "Expected one of"),
        (["--lr=lion=1e-4"], "not in --optimizers"),
        (["--optimizers=adam,adam"], "duplicate"),
        (["--optimizers=,"], "at least one"),
        (["--dataset=cifar10"], "invalid choice"),
        (["--epochs=0"], "integer >= 1"),
        (["--target-accuracy=95"], "(0, 1]"),
    ],
)
def test_bad_options_give_clear_errors(argv, message, capsys):
    code, _, err = run_cli(["compare", *argv], capsys)
    assert code == 2
    assert message in err


def test_unavailable_dataset_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setattr(data, "_fashion_mnist_installed", lambda *a: False)
    code, _, err = run_cli(["compare", "--dataset=fashion_mnist"], capsys)
    assert code == 1
    assert "apt-get install dataset-fashion-mnist" in err
    assert data.resolve_name("auto") == "digits"


def test_unknown_names_in_python_api():
    with pytest.raises(ValueError, match="Expected one of: adan"):
        runner.make_optimizer("adamx")
    with pytest.raises(ValueError, match="Unknown dataset"):
        data.resolve_name("cifar10")
    with pytest.raises(ValueError, match="Unknown model"):
        runner.build_model("resnet", (8, 8), 10)


def test_every_optimizer_in_the_table_builds():
    for name in runner.OPTIMIZERS:
        optimizer = runner.make_optimizer(name, learning_rate=0.01)
        assert float(np.asarray(optimizer.learning_rate)) == pytest.approx(0.01)


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
    assert "--optimizers" in result.stdout
    assert "--target-accuracy" in result.stdout
