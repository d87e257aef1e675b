"""Each configuration in a fresh subprocess; rows come back as JSON lines.

A child prints one `RESULT <json>` line per row (`emit`); the parent
(`run`) collects them and adds what only it knows (suite id, attempt,
the quiet-machine check taken just before the child started).
"""

import datetime
import json
import os
import subprocess
import sys
import time

from harness import device as device_lib
from harness import machine

PREFIX = "RESULT "


def suite_id():
    return datetime.datetime.now().strftime("%Y%m%dT%H%M%S")


def child_env(backend, threads=None, device="cpu", extra=None):
    """The environment of a child: `KERAS_BACKEND`, thread counts, platform.

    With `threads`, OMP and MKL use that many threads (the scripts also set
    torch's and TensorFlow's own counts inside the child).
    """
    env = dict(os.environ)
    env.update(
        KERAS_BACKEND=backend,
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONWARNINGS="ignore",
        BENCH_DEVICE=device,
    )
    env.update(device_lib.PLATFORM_ENV[device])
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    # The children import this checkout's keras_batchopt and the harness.
    paths = [machine.REPO_ROOT, os.path.join(machine.REPO_ROOT, "benchmarks")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra or {})
    return env


def nice_kwargs(nice):
    """subprocess arguments that run the child at nice `nice`.

    A new session whose autogroup nice is set too: with
    kernel.sched_autogroup_enabled=1 a plain nice value only counts inside
    its session. Negative values need root.
    """
    if nice is None:
        return {}

    def preexec():
        try:
            with open("/proc/self/autogroup", "w") as f:
                f.write(str(nice))
        except OSError:
            pass
        os.setpriority(os.PRIO_PROCESS, 0, nice)

    return dict(preexec_fn=preexec, start_new_session=True)


def emit(row):
    """Child side: hands one row to the parent."""
    print(PREFIX + json.dumps(row), flush=True)


def run(argv, env, timeout=900, nice=None):
    """Runs `python argv...` in the repository root; returns (rows, info).

    `info` has `returncode`, `wall_s` and, on failure, `error` and the
    tail of stderr (also printed).
    """
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, *argv],
            env=env,
            cwd=machine.REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            **nice_kwargs(nice),
        )
    except subprocess.TimeoutExpired:
        return [], dict(error="timeout", wall_s=time.perf_counter() - t0)
    rows = [
        json.loads(line[len(PREFIX) :])
        for line in proc.stdout.splitlines()
        if line.startswith(PREFIX)
    ]
    info = dict(returncode=proc.returncode, wall_s=time.perf_counter() - t0)
    if proc.returncode or not rows:
        info.update(
            error=f"exit {proc.returncode}", stderr_tail=proc.stderr[-2000:]
        )
        print(proc.stderr[-3000:], file=sys.stderr, flush=True)
    return rows, info


def context(quiet=None):
    """What every row records about where it ran."""
    head, dirty = machine.git_state()
    out = dict(
        machine=machine.machine_info(),
        versions=machine.versions(),
        git_head=head,
        git_dirty=dirty,
        package_sha=machine.package_fingerprint(),
        date=datetime.date.today().isoformat(),
    )
    if quiet is not None:
        out["quiet"] = quiet
    return out


def run_and_append(argv, env, path):
    """Runs one child (`run`) and appends its rows, each with `context()`,
    to the JSONL `path`; returns 1 when the child gave no row, else 0."""
    from harness import render

    rows, _ = run(argv, env)
    render.append_rows(path, [dict(r, **context()) for r in rows])
    return 0 if rows else 1
