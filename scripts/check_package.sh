#!/usr/bin/env bash
# The package as a user gets it from PyPI:
#
#     bash scripts/check_package.sh                # jax, torch and tensorflow
#     bash scripts/check_package.sh torch          # some backends only
#
# 1. Builds the sdist and, from it, the wheel (`python -m build`, with the
#    build tools in a throwaway virtual environment).
# 2. `twine check --strict` on both: the README renders as PyPI's
#    description.
# 3. For each backend, a fresh virtual environment with the wheel and only
#    that backend's extra (`keras_batchopt-*.whl[jax]`), at the versions CI
#    pins (requirements/test.txt as a constraints file). There
#    `import keras_batchopt` must work with the other two backends absent;
#    then, with scikit-learn added (the quickstart's data), the README's
#    quickstart runs with that backend for one epoch, and the model it
#    saves loads back without custom_objects.
#
# Installs use uv (put into the throwaway environment by pip): it installs
# in parallel, links from its cache and compiles no bytecode, several times
# faster than pip; KERAS_BATCHOPT_CHECK_INSTALLER=pip does the same with pip.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON_BIN="${PYTHON:-python3}"
INSTALLER="${KERAS_BATCHOPT_CHECK_INSTALLER:-uv}"
# The release tools, pinned like everything else CI runs.
TOOLS=(build==1.6.1 twine==7.0.0)
UV=uv==0.13.9
if [ "$#" -gt 0 ]; then backends=("$@"); else backends=(jax torch tensorflow); fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
start=$SECONDS
step() { echo "[check_package $((SECONDS - start)) s] $*"; }

# requirements/test.txt pins `tensorflow-cpu`; the `tensorflow` extra asks
# for `tensorflow`, pinned here at the same version.
constraints="$work/constraints.txt"
cp "$ROOT/requirements/test.txt" "$constraints"
sed -n 's/^tensorflow-cpu==/tensorflow==/p' "$ROOT/requirements/test.txt" \
    >>"$constraints"

step "build tools"
"$PYTHON_BIN" -m venv "$work/tools"
tools="$work/tools/bin"
if [ "$INSTALLER" = uv ]; then
    "$tools/pip" install --quiet "$UV"
    "$tools/uv" pip install --quiet --python "$tools/python" "${TOOLS[@]}"
else
    "$tools/pip" install --quiet "${TOOLS[@]}"
fi

step "build sdist and wheel"
"$tools/python" -m build --outdir "$work/dist" "$ROOT" >"$work/build.log" 2>&1 \
    || { cat "$work/build.log"; exit 1; }
"$tools/twine" check --strict "$work/dist"/*
grep -i "warning" "$work/build.log" || true  # shown, not fatal
wheels=("$work"/dist/keras_batchopt-*.whl)
wheel="${wheels[0]}"
# The wheel holds the package only; its version is src/version.py's.
"$tools/python" - "$wheel" "$ROOT" <<'PYEOF'
import re
import sys
import zipfile

wheel, root = sys.argv[1:]
names = zipfile.ZipFile(wheel).namelist()
stray = [n for n in names if not n.startswith("keras_batchopt")]
assert not stray, f"the wheel holds more than the package: {stray[:5]}"
version = re.search(
    r'__version__ = "(.*)"',
    open(f"{root}/keras_batchopt/src/version.py").read(),
).group(1)
assert f"keras_batchopt-{version}-" in wheel, (wheel, version)
print(f"wheel: {len(names)} files, version {version}")
PYEOF

# The quickstart, the first python block after "## Quickstart", with the
# backend and the epochs changed in the copy (failing loudly if the README
# no longer has the lines edited here).
"$tools/python" - "$ROOT/README.md" "$work/quickstart_template.py" <<'PYEOF'
import re
import sys

readme = open(sys.argv[1]).read()
section = readme.split("## Quickstart", 1)[1]
code = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
for old, new in [
    ('os.environ["KERAS_BACKEND"] = "jax"', 'os.environ["KERAS_BACKEND"] = "@BACKEND@"'),
    ("epochs=10", "epochs=1"),
]:
    if code.count(old) != 1:
        sys.exit(f"README quickstart: expected one {old!r}")
    code = code.replace(old, new)
code += """
assert keras.backend.backend() == "@BACKEND@", keras.backend.backend()
reloaded = keras.models.load_model("digits.keras")
assert type(reloaded.optimizer) is keras_batchopt.optimizers.Adan
print("quickstart ok on", keras.backend.backend())
"""
open(sys.argv[2], "w").write(code)
PYEOF

make_venv() {  # make_venv VENV: a fresh virtual environment
    if [ "$INSTALLER" = uv ]; then
        "$tools/uv" venv --quiet --python "$PYTHON_BIN" "$1"
    else
        "$PYTHON_BIN" -m venv "$1"
    fi
}

# uv reads no pip configuration: the local wheel folder that holds the
# torch CPU wheel (pip finds it through pip.conf) is passed on.
uv_links=()
for links in ${PIP_FIND_LINKS:-} /opt/wheels; do
    [ -d "$links" ] && uv_links+=(--find-links "$links")
done

install() {  # install VENV ARGS...: into VENV, with the constraints
    local venv="$1"
    shift
    if [ "$INSTALLER" = uv ]; then
        "$tools/uv" pip install --quiet --python "$venv/bin/python" \
            "${uv_links[@]}" -c "$constraints" "$@"
    else
        # No bytecode compilation of every installed module (TensorFlow,
        # torch): Python compiles what it imports.
        "$venv/bin/pip" install --quiet --no-compile -c "$constraints" "$@"
    fi
}

for backend in "${backends[@]}"; do
    case "$backend" in jax | torch | tensorflow) ;; *)
        echo "unknown backend $backend (jax, torch or tensorflow)" >&2
        exit 2
        ;;
    esac
    venv="$work/venv-$backend"
    run_dir="$work/run-$backend"  # outside the checkout: the wheel is used
    mkdir -p "$run_dir"
    step "$backend: fresh venv with ${wheel##*/}[$backend]"
    make_venv "$venv"
    install "$venv" "$wheel[$backend]"
    (cd "$run_dir" && KERAS_BACKEND="$backend" "$venv/bin/python" - \
        "$backend" "$venv" <<'PYEOF'
import importlib.util
import os
import sys

backend, venv = sys.argv[1:]
modules = {"jax": "jax", "torch": "torch", "tensorflow": "tensorflow"}
others = [m for name, m in modules.items() if name != backend]
present = [m for m in others if importlib.util.find_spec(m) is not None]
assert not present, f"the {backend} extra also installed {present}"
import keras_batchopt

where = os.path.realpath(keras_batchopt.__file__)
assert where.startswith(os.path.realpath(venv)), where
import keras

assert keras.backend.backend() == backend
from importlib.metadata import version

print(
    f"import keras_batchopt {keras_batchopt.__version__} ok with only "
    f"{backend} {version(backend)} (keras {keras.__version__})"
)
PYEOF
    )
    step "$backend: README quickstart"
    install "$venv" scikit-learn
    sed "s/@BACKEND@/$backend/g" "$work/quickstart_template.py" \
        >"$run_dir/quickstart.py"
    (cd "$run_dir" && "$venv/bin/python" quickstart.py)
done
step "done: sdist, wheel, twine check and ${backends[*]} passed"
