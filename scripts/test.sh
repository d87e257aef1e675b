#!/usr/bin/env bash
# The whole test suite on TensorFlow, JAX and PyTorch, from a fresh machine:
#
#     bash scripts/test.sh            # everything (what CI runs)
#     bash scripts/test.sh -k adan    # extra arguments go to pytest
#
# Then a pass of the optimizer tests against the Keras floor declared in
# pyproject.toml, on the backends whose framework still works with that
# Keras (torch and tensorflow; Keras 3.8's JAX backend needs a JAX of its
# own era). It ends with one line "total: N passed, N failed".
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$ROOT"

reports="$(mktemp -d)"
status=0
run() {  # run NAME BACKEND [PYTHONPATH] -- pytest args...
    local name="$1" backend="$2" extra_path="$3"
    shift 3
    echo
    echo "=== $name (KERAS_BACKEND=$backend) ==="
    KERAS_BACKEND="$backend" PYTHONPATH="$extra_path" "$PY" -m pytest \
        -p no:cacheprovider --junitxml="$reports/$name.xml" "$@" || status=1
}

for backend in tensorflow jax torch; do
    run "$backend" "$backend" "" tests "$@"
done

floor_dir="$VENV/keras-floor-$KERAS_FLOOR"
if [ ! -d "$floor_dir/keras" ]; then
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$floor_dir" "keras==$KERAS_FLOOR"
fi
for backend in torch tensorflow; do
    run "keras-$KERAS_FLOOR-$backend" "$backend" "$floor_dir" \
        tests/optimizers tests/test_api.py "$@"
done

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
