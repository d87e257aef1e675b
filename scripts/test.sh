#!/usr/bin/env bash
# The whole test suite on TensorFlow, JAX and PyTorch, from a fresh machine:
#
#     bash scripts/test.sh            # everything (what CI runs)
#     bash scripts/test.sh -k adan    # extra arguments go to pytest
#
# Then a pass of the optimizer contract, fast-path and AdaHessian, schedule,
# batch-size, API and layer-contract
# tests against the Keras floor declared in pyproject.toml, on the backends
# whose framework still works with that Keras (torch and tensorflow; Keras
# 3.8's JAX backend needs a JAX of its own era). It ends with one line "total: N passed, N failed".
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$ROOT"

reports="$(mktemp -d)"
run() {  # run NAME BACKEND [PYTHONPATH] -- pytest args...; output to a log
    local name="$1" backend="$2" extra_path="$3"
    shift 3
    {
        echo
        echo "=== $name (KERAS_BACKEND=$backend) ==="
        KERAS_BACKEND="$backend" PYTHONPATH="$extra_path" "$PY" -m pytest \
            -p no:cacheprovider --junitxml="$reports/$name.xml" "$@" \
            || echo "FAILED: $name" >>"$reports/failed"
    } >"$reports/$name.log" 2>&1
}

floor_dir="$VENV/keras-floor-$KERAS_FLOOR"
if [ ! -d "$floor_dir/keras" ]; then
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$floor_dir" "keras==$KERAS_FLOOR"
fi
floor() {  # what leans on Keras's API, against the Keras floor. Formulas
    # are checked on the current Keras (the layers' references, and the
    # optimizers' oracle trajectories, whose Keras surface, `apply`, every
    # contract case covers here); their Keras integration runs here: the
    # optimizer contract and fast paths, AdaHessian's training step (built
    # on Keras's trainers), schedules, batch sizes, the API and string
    # names (resolved by Keras's deserialization), the layers'
    # contract, and the backward-pass state with every optimizer (EMA
    # and loss scaling treat it differently before Keras 3.10).
    local oracles=()
    for name in adan lamb lars sgd_sai sink_gd adagrad_norm torch_adan_peers; do
        oracles+=("--ignore=tests/optimizers/test_$name.py")
    done
    run "keras-$KERAS_FLOOR-$1" "$1" "$floor_dir" \
        tests/optimizers "${oracles[@]}" tests/schedules tests/batch_size \
        tests/test_api.py tests/test_string_names.py \
        tests/layers/test_keras_contract.py \
        "tests/layers/test_transformer_normalization.py::test_backward_state_with_every_optimizer" \
        "${@:2}"
}

# Two lanes side by side (the suites are independent processes; most of
# their time is single-threaded Python and compilation, so two lanes on two
# cores take about 60% of the sequential time). KERAS_BATCHOPT_TEST_LANES=1
# runs everything in one lane.
lane_a() {
    run tensorflow tensorflow "" tests "$@"
    floor tensorflow "$@"
    floor torch "$@"
}
lane_b() {
    run jax jax "" tests "$@"
    run torch torch "" tests "$@"
}
# Beside the lanes, the checks of what users get rather than of the code
# (the package built and installed per backend extra; the API site and the
# notebooks): they mostly wait on downloads and disk. Skipped when pytest
# arguments narrow the run, unless KERAS_BATCHOPT_CHECK_RELEASE=1.
release_checks() {
    {
        echo
        echo "=== release checks (scripts/check_docs.sh," \
            "scripts/check_package.sh) ==="
        bash "$ROOT/scripts/check_docs.sh" \
            || echo "FAILED: check_docs" >>"$reports/failed"
        bash "$ROOT/scripts/check_package.sh" \
            || echo "FAILED: check_package" >>"$reports/failed"
    } >"$reports/release.log" 2>&1
}
release_pid=""
if [ "$#" -eq 0 ] || [ "${KERAS_BATCHOPT_CHECK_RELEASE:-0}" = "1" ]; then
    release_checks &
    release_pid=$!
fi
start=$SECONDS
if [ "${KERAS_BATCHOPT_TEST_LANES:-2}" = "1" ]; then
    lane_a "$@"
    lane_b "$@"
else
    lane_a "$@" &
    pid_a=$!
    lane_b "$@" &
    pid_b=$!
    wait "$pid_a" "$pid_b" || true
fi
if [ -n "$release_pid" ]; then
    wait "$release_pid" || true
fi
for name in tensorflow jax torch "keras-$KERAS_FLOOR-tensorflow" \
    "keras-$KERAS_FLOOR-torch" release; do
    [ "$name" = release ] && [ -z "$release_pid" ] && continue
    cat "$reports/$name.log" || echo "(no log for $name)"
done
echo
echo "suites took $((SECONDS - start)) s"
status=0
if [ -f "$reports/failed" ]; then
    cat "$reports/failed"
    status=1
fi

"$PY" - "$reports" <<'PYEOF'
import glob, sys, xml.etree.ElementTree as ET
totals = dict(tests=0, failures=0, errors=0, skipped=0)
for path in sorted(glob.glob(f"{sys.argv[1]}/*.xml")):
    for suite in ET.parse(path).getroot().iter("testsuite"):
        for key in totals:
            totals[key] += int(suite.get(key, 0))
failed = totals["failures"] + totals["errors"]
passed = totals["tests"] - failed - totals["skipped"]
line = f"total: {passed} passed, {failed} failed"
if totals["skipped"]:
    line += f", {totals['skipped']} skipped"
print()
print(line)
PYEOF
exit "$status"
