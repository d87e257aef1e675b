"""Warm-up, then repeated timing, with the CPU accounting of the loop."""

import statistics
import time

from harness import machine


def summary(times_ms):
    """Median, min, mean and p10/p90 (numpy's linear percentiles) in ms."""
    import numpy as np

    arr = np.asarray(times_ms)
    return dict(
        median_ms=float(np.median(arr)),
        p10_ms=float(np.percentile(arr, 10)),
        p90_ms=float(np.percentile(arr, 90)),
        min_ms=float(arr.min()),
        mean_ms=float(arr.mean()),
    )


class Accounting:
    """CPU use while a block runs: own cores, other processes' cores,
    run-queue wait and minor faults (summed over several blocks)."""

    def __init__(self):
        self.own = self.busy = self.wall = self.wait = 0.0
        self.faults = 0

    def __enter__(self):
        self._start = (
            machine.cpu_busy_s(),
            machine.own_cpu_s(),
            time.perf_counter(),
            machine.runqueue_wait_s(),
            machine.minor_faults(),
        )
        return self

    def __exit__(self, *exc):
        busy0, own0, wall0, wait0, flt0 = self._start
        self.busy += machine.cpu_busy_s() - busy0
        self.own += machine.own_cpu_s() - own0
        self.wall += time.perf_counter() - wall0
        self.wait += machine.runqueue_wait_s() - wait0
        self.faults += machine.minor_faults() - flt0
        return False

    def result(self, steps):
        # /proc/stat ticks are 10 ms, so short loops read coarsely.
        foreign = max(self.busy - self.own, 0.0)
        return dict(
            minflt_per_step=self.faults / steps,
            timed_wall_s=self.wall,
            own_cpu_s=self.own,
            foreign_cpu_s=foreign,
            foreign_cores=foreign / self.wall,
            own_cores=self.own / self.wall,
            runqueue_wait_frac=self.wait / self.wall,
        )


def time_steps(step, steps, warmup, prepare=None):
    """Times `step()` `steps` times after `warmup` untimed calls.

    The first warm-up call is reported as `first_call_s` (tracing and
    compilation). `prepare()`, if given, runs before every call outside
    the timed interval (it still counts in the CPU accounting).
    """
    prepare = prepare or (lambda: None)
    prepare()
    t0 = time.perf_counter()
    step()
    first_call_s = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        prepare()
        step()
    times = []
    acct = Accounting()
    with acct:
        for _ in range(steps):
            prepare()
            t = time.perf_counter()
            step()
            times.append((time.perf_counter() - t) * 1e3)
    return dict(
        steps=steps,
        warmup=warmup,
        **summary(times),
        first_call_s=first_call_s,
        **acct.result(steps),
        times_ms=[round(t, 4) for t in times],
    )


def warm_up(steps, warmup):
    """Calls every `steps[name]()` `warmup` times; returns the first call's
    seconds per name."""
    first = {}
    for name, step in steps.items():
        t0 = time.perf_counter()
        step()
        first[name] = time.perf_counter() - t0
        for _ in range(warmup - 1):
            step()
    return first


def round_robin(steps, rounds, per_round):
    """Times every `steps[name]()` in turn, `rounds` times `per_round`
    calls, so that drift hits every configuration alike.

    Returns {name: (times_ms, Accounting)}.
    """
    out = {name: ([], Accounting()) for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            times, acct = out[name]
            with acct:
                for _ in range(per_round):
                    t = time.perf_counter()
                    step()
                    times.append((time.perf_counter() - t) * 1e3)
    return out


def mean_call_ms(fn, calls):
    """Mean milliseconds of `calls` back-to-back calls of `fn`."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e3


def median(values):
    return statistics.median(values) if values else float("nan")
