"""Smoke tests of the benchmark harness (benchmarks/harness/), cheap
enough for CI.

Every committed table is reproduced byte for byte from its JSONL; every
script prints its plan (`--dry-run`, no backend imported); one tiny
benchmark (`optimizer_step.py --quick`, floors only) runs end to end on
the current backend; and `--device cuda` fails with one clear line where
CUDA is missing.
"""

import json
import os
import subprocess
import sys

import keras
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
RESULTS = os.path.join(BENCH, "results")


def _import(name):
    import importlib

    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
    return importlib.import_module(name)


@pytest.mark.parametrize(
    "script, stem",
    [
        ("optimizer_step", "optimizer_step_cpu"),
        ("optimizer_step", "optimizer_step_lamb_lars_cpu"),
        ("optimizer_step", "optimizer_step_xla_cpu"),
        (
            "optimizer_step_sgd_sai_sink_gd",
            "optimizer_step_sgd_sai_sink_gd_cpu",
        ),
        ("ada_hessian_step", "ada_hessian_step_cpu"),
        ("conadv_step", "conadv_step_cpu"),
        ("normalization_layers", "normalization_layers_cpu"),
        ("normalization_layers", "normalization_layers_region_cpu"),
        (
            "test_time_normalization_step",
            "test_time_normalization_step_cpu",
        ),
        ("transformer_normalization", "transformer_normalization_cpu"),
        ("schedules_and_batch_tests", "schedules_batch_tests_cpu"),
        ("optimizer_memory", "optimizer_memory"),
        ("memory_growth", "memory_growth_cpu"),
        ("quickstart_latency", "quickstart_latency_cpu"),
        ("torch_compile_policy", "torch_compile_policy_cpu"),
        ("strategies_overhead", "strategies_overhead_cpu"),
        ("noise_assignment", "noise_assignment_cpu"),
    ],
)
def test_render_reproduces_committed_markdown(script, stem):
    render = _import("harness.render")
    module = _import(script)
    md_path = os.path.join(RESULTS, stem + ".md")
    rows = render.load_rows(os.path.join(RESULTS, stem + ".jsonl"))
    renderer = getattr(module, "render", None)
    if renderer is None:
        renderer = _import("optimizer_configs.report").render
    text = render.with_notes(renderer(rows, md_path), md_path)
    with open(md_path) as f:
        assert text == f.read()


SCRIPTS = (
    "optimizer_step.py",
    "optimizer_step_sgd_sai_sink_gd.py",
    "ada_hessian_step.py",
    "conadv_step.py",
    "normalization_layers.py",
    "test_time_normalization_step.py",
    "transformer_normalization.py",
    "schedules_and_batch_tests.py",
    "optimizer_memory.py",
    "memory_growth.py",
    "torch_compile_policy.py",
    "quickstart_latency.py",
    "noise_assignment.py",
    "strategies_overhead.py",
)


def _run(*argv, script="optimizer_step.py", timeout=120):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, os.path.join(BENCH, script), *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


def test_quick_run_writes_rows_and_table(tmp_path):
    backend = keras.backend.backend()
    out = tmp_path / "rows.jsonl"
    proc = _run(
        "--quick",
        "--backend",
        backend,
        "--only",
        "^floor-",
        "--output",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["framework"] for r in rows} == {"torch", backend}
    for row in rows:
        assert "error" not in row, row
        assert row["median_ms"] > 0 and len(row["times_ms"]) == row["steps"]
        assert set(row["machine"]) >= {"cpu", "cores", "python"}
        assert "keras" in row["versions"]
        assert set(row["quiet"]) == {
            "loadavg_1min",
            "foreign_cores",
            "spin_share",
        }
    table = (tmp_path / "rows.md").read_text()
    assert "| torch | floor | copy |" in table


def test_cuda_request_fails_clearly_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: nothing to refuse")
    proc = _run("--device", "cuda", "--backend", "torch", "--only", "floor")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("CUDA requested but not available: ")
    assert "torch.cuda.is_available() is False" in lines[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_dry_run_prints_the_plan(script):
    proc = _run("--dry-run", "--quick", script=script, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith(script[: -len(".py")] + ":"), proc.stdout


def test_gpu_suite_plan_covers_every_gpu_benchmark_within_budget():
    proc = _run("--dry-run", script="gpu_suite.py", timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "GPU suite, device cuda, budget 480 s:"
    steps = [line.split("] ")[1].split()[0] for line in lines[1:]]
    assert [os.path.basename(s) for s in steps] == [
        "optimizer_step_sgd_sai_sink_gd.py",
        "normalization_layers.py",
        "transformer_normalization.py",
        "optimizer_step.py",
    ]
    reserved = [int(line.split("s]")[0].strip(" [")) for line in lines[1:]]
    assert sum(reserved) <= 480
    for line in lines[1:]:
        assert "--device cuda" in line and line.endswith(
            "_gpu.jsonl --backend all"
        )
