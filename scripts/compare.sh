#!/usr/bin/env bash
# The main job, from a fresh machine: installs everything, adds the offline
# Fashion-MNIST (Debian's dataset-fashion-mnist) when apt can, and trains a
# small model with several optimizers side by side, 3 seeds each, and
# reports means, 95% intervals and Welch's t-test against a baseline:
#
#     bash scripts/compare.sh                      # KERAS_BACKEND defaults to jax
#     KERAS_BACKEND=torch bash scripts/compare.sh --optimizers adan,adamw
#     bash scripts/compare.sh --optimizers all --tune   # tuned learning rates
#     bash scripts/compare.sh --layers ghost_bn,bcn_ws  # normalization layers
#
# Arguments go to `python -m keras_batchopt compare` (see --help).
set -euo pipefail
source "$(dirname "$0")/setup.sh"

data=/usr/share/datasets/fashion-mnist
if [ ! -d "$data" ] && command -v apt-get >/dev/null; then
    sudo_=""
    [ "$(id -u)" -eq 0 ] || sudo_="sudo -n"
    { $sudo_ apt-get update -qq && \
      $sudo_ apt-get install -y -qq dataset-fashion-mnist; } >/dev/null 2>&1 \
        || echo "compare: Fashion-MNIST not installed; using sklearn digits"
fi
export KERAS_BACKEND="${KERAS_BACKEND:-jax}"
exec "$PY" -m keras_batchopt compare "$@"
