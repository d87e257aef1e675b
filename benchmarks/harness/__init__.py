"""Shared benchmark harness: processes, timing, floors, machine, tables.

Every script under `benchmarks/` declares its configurations and uses
these modules for the rest:

- `cli`: the common options (`--quick`, `--output`, `--device`,
  `--repeats`, `--render-only`, `--dry-run`, `--backend`).
- `process`: one configuration (or one backend) per fresh subprocess with
  a given `KERAS_BACKEND` and environment; `RESULT` lines back to the
  parent.
- `timing`: warm-up, then repeated timing (median, min, p10/p90) with the
  CPU accounting of the timed loop (own cores, other processes' cores,
  run-queue wait, minor faults).
- `floors`: the bytes-moved floor per backend (in-place add on CPU, a
  device copy on CUDA) and its achieved bandwidth.
- `machine`: CPU model, cores, library versions, the checkout, and the
  quiet-machine check recorded in every row.
- `device`: `--device cuda` checks (exit status 2 and one line when CUDA
  is not there).
- `train_step_timing`: `model.train_on_batch` of a few compiled models
  timed round-robin, one row per model (the train-step comparisons).
- `render`: JSONL in and out, and the one markdown renderer (header and
  tables) every result file is written with.
"""
