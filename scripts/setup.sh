# Sourced by scripts/test.sh and scripts/compare.sh: creates the virtual
# environment and installs everything into it, on a fresh machine too.
# Re-running is cheap: a stamp of the requirement files skips the install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${KERAS_BATCHOPT_VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV with $("$PYTHON_BIN" --version)"
    "$PYTHON_BIN" -m venv "$VENV"
fi
PY="$VENV/bin/python"

stamp="$VENV/.keras_batchopt_stamp"
want="$(cat "$ROOT/requirements/test.txt" "$ROOT/requirements/timm.txt" \
    "$ROOT/requirements/data.txt" "$ROOT/requirements/docs.txt" \
    "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "setup: installing requirements (a minute or two on a fresh machine)"
    "$PY" -m pip install --quiet --disable-pip-version-check \
        -r "$ROOT/requirements/test.txt" -r "$ROOT/requirements/docs.txt"
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps \
        -r "$ROOT/requirements/timm.txt"
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps \
        -r "$ROOT/requirements/data.txt"
    "$PY" -m pip install --quiet --disable-pip-version-check --no-deps \
        -e "$ROOT"
    echo "$want" > "$stamp"
fi

# The Keras floor from pyproject.toml, installed beside (not into) the venv
# for the floor pass of scripts/test.sh.
KERAS_FLOOR="$(sed -n 's/.*"keras>=\([0-9.]*\)".*/\1/p' "$ROOT/pyproject.toml" \
    | head -n 1)"
export KERAS_FLOOR PY ROOT VENV
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
