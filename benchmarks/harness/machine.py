"""Machine, versions, checkout, and the quiet-machine check.

Every row a harness benchmark writes carries `machine` (CPU model, cores,
memory, OS, Python), `versions` (the libraries the suite uses) and
`quiet` (load average and a CPU spin check taken before the process
started), so a table never depends on the machine that renders it.
"""

import hashlib
import importlib.metadata
import os
import platform
import resource
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
)

# (label, distributions tried in order).
DISTRIBUTIONS = (
    ("keras", ("keras",)),
    ("tensorflow", ("tensorflow-cpu", "tensorflow")),
    ("jax", ("jax",)),
    ("jaxlib", ("jaxlib",)),
    ("optax", ("optax",)),
    ("torch", ("torch",)),
    ("timm", ("timm",)),
    ("pytorch_optimizer", ("pytorch_optimizer",)),
    ("numpy", ("numpy",)),
)


def cpu_model():
    """The `model name` of /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_info():
    """CPU model, cores, memory, OS and Python of this machine."""
    return dict(
        cpu=cpu_model(),
        cores=os.cpu_count(),
        memory_gib=memory_gib(),
        os=f"{platform.system()} {platform.release()}",
        python=platform.python_version(),
    )


def versions():
    """{label: version} of the installed libraries the benchmarks use."""
    out = {}
    for label, dists in DISTRIBUTIONS:
        for dist in dists:
            try:
                out[label] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return out


def git_state():
    """(HEAD commit, whether keras_batchopt/ has uncommitted changes)."""

    def git(*argv):
        try:
            return subprocess.run(
                ["git", *argv],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--", "keras_batchopt"))
    return head, dirty


def package_fingerprint():
    """SHA-1 (12 hex digits) of the keras_batchopt sources benchmarked."""
    digest = hashlib.sha1()
    root = os.path.join(REPO_ROOT, "keras_batchopt")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            if name.endswith(".py"):
                path = os.path.join(dirpath, name)
                digest.update(os.path.relpath(path, root).encode())
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()[:12]


# -- CPU accounting -------------------------------------------------------


def cpu_busy_s():
    """System-wide busy CPU seconds so far (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return float("nan")
    # user nice system idle iowait irq softirq steal; guest is in user.
    user, nice, system, _, _, irq, softirq, steal = map(int, fields[:8])
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / hz


def own_cpu_s(who=resource.RUSAGE_SELF):
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def minor_faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def runqueue_wait_s():
    """Seconds this process's threads spent runnable but not running.

    Sum of the second field of /proc/self/task/*/schedstat. NaN where not
    available.
    """
    total = 0
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return float("nan")
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                total += int(f.read().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def foreign_load(seconds):
    """Average number of cores busy with other processes over `seconds`."""
    b0, o0, t0 = cpu_busy_s(), own_cpu_s(), time.perf_counter()
    time.sleep(seconds)
    b1, o1, t1 = cpu_busy_s(), own_cpu_s(), time.perf_counter()
    return max((b1 - b0) - (o1 - o0), 0.0) / (t1 - t0)


def spin_check(seconds=0.2):
    """CPU share one busy loop gets over `seconds` (1.0 = a whole core).

    Below about 0.9 another process is taking this core.
    """
    c0, t0 = time.process_time(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        pass
    return (time.process_time() - c0) / (time.perf_counter() - t0)


def quiet_check(sample_s=0.5):
    """Load average, other processes' cores and the spin check, now."""
    try:
        load1 = round(os.getloadavg()[0], 2)
    except OSError:
        load1 = None
    return dict(
        loadavg_1min=load1,
        foreign_cores=round(foreign_load(sample_s), 3),
        spin_share=round(spin_check(), 3),
    )


def is_quiet(quiet, max_foreign=0.2, min_spin=0.9):
    return (
        quiet["foreign_cores"] <= max_foreign
        and quiet["spin_share"] >= min_spin
    )


def wait_for_quiet(max_wait_s, max_foreign=0.2, min_spin=0.9):
    """Waits up to `max_wait_s` for a quiet machine; returns (waited, check).

    Prints one warning to stderr when the machine is still busy.
    """
    t0 = time.perf_counter()
    quiet = quiet_check()
    while (
        not is_quiet(quiet, max_foreign, min_spin)
        and time.perf_counter() - t0 < max_wait_s
    ):
        time.sleep(2.0)
        quiet = quiet_check()
    if not is_quiet(quiet, max_foreign, min_spin):
        print(
            f"warning: the machine is busy (other processes use "
            f"{quiet['foreign_cores']:.2f} cores, load average "
            f"{quiet['loadavg_1min']}, a spin loop got "
            f"{quiet['spin_share']:.2f} of a core); timings will be noisy",
            file=sys.stderr,
            flush=True,
        )
    return time.perf_counter() - t0, quiet
