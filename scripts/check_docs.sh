#!/usr/bin/env bash
# The notebooks and the docs site, as CI checks them (a minute or so):
#
#     bash scripts/check_docs.sh
#
# 1. notebooks/ is current with guides/ (scripts/make_notebooks.py --check;
#    run it without --check to regenerate);
# 2. `mkdocs build --strict` builds the API reference and guide pages into
#    site/: no warning from mkdocs, mkdocstrings or Griffe (a broken link or
#    cross-reference, a malformed docstring), no public name without a
#    docstring or missing from its API page (scripts/mkdocs_hooks.py).
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$ROOT"

"$PY" scripts/make_notebooks.py --check
# The docstrings made at import time import keras_batchopt, so Keras: the
# JAX backend imports fastest. NO_MKDOCS_2_WARNING: Material's banner.
KERAS_BACKEND=jax NO_MKDOCS_2_WARNING=1 "$PY" -m mkdocs build --strict \
    --site-dir "${KERAS_BATCHOPT_SITE_DIR:-$ROOT/site}"
echo "docs: notebooks current, site built in ${KERAS_BATCHOPT_SITE_DIR:-site/}"
