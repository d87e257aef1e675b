"""Round-robin suites: one child process per unit, `--repeats` times.

A unit is what one child measures (a backend, or a backend and a model);
the child sets up every configuration of its unit and times them
round-robin (`timing.round_robin` or its own loop), then hands its rows
back with `process.emit`. The parent (`run`) starts the children one at a
time, interleaving the repeats (every unit once, then again), adds to
every row where and when it ran (`process.context`) and writes the rows
to the JSONL as they come.
"""

import json
import os
import statistics
import sys

from harness import machine
from harness import process


def run(args, path, units, child_argv, threads=None, timeout=900):
    """Runs every unit `args.repeats` times; returns the number of failures.

    `units`: list of (backend, label); `child_argv(backend, label, repeat)`
    the script and options of that unit's child; `threads`: OMP and MKL
    threads of the children (None: left to the libraries).
    """
    suite = process.suite_id()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    failures = 0
    with open(path, "a" if args.append else "w") as out:
        for repeat in range(args.repeats):
            for backend, label in units:
                _, quiet = machine.wait_for_quiet(args.max_wait)
                env = process.child_env(backend, threads, args.device)
                argv = child_argv(backend, label, repeat)
                rows, info = process.run(argv, env, timeout, args.nice)
                context = process.context(quiet)
                for row in rows:
                    row.update(context, suite=suite, nice=args.nice)
                    out.write(json.dumps(row) + "\n")
                out.flush()
                failures += bool(info.get("error"))
                print(
                    f"repeat {repeat} {label}: {len(rows)} rows, "
                    f"{info['wall_s']:.0f} s"
                    + (
                        f", FAILED ({info['error']})" if "error" in info else ""
                    ),
                    file=sys.stderr,
                    flush=True,
                )
    return failures


def pooled_median(rows, key="runs"):
    """The median of every value of `key` over `rows` (one process's row
    gives its own median; several processes pool their rounds)."""
    return statistics.median([v for r in rows for v in r[key]])


def group(rows, *keys):
    """{tuple of `keys`: [rows]}, in the order the rows first appear."""
    out = {}
    for r in rows:
        out.setdefault(tuple(r.get(k) for k in keys), []).append(r)
    return out
