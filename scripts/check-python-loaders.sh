#!/usr/bin/env bash
# Installs sparsify and SAELens in a virtualenv (once) and checks that a run directory loads
# in both. Usage: scripts/check-python-loaders.sh RUN_DIR SHARD [--rows N] [--expect-heldout]
set -euo pipefail
venv="${SAE_PY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sae-wgpu/pyloaders}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q eai-sparsify sae-lens
fi
# Triton needs a CUDA device; sparsify falls back to its eager decoder without it.
if ! command -v nvidia-smi >/dev/null 2>&1; then export SPARSIFY_DISABLE_TRITON=1; fi
exec "$venv/bin/python" "$(dirname "$0")/check_python_loaders.py" "$@"
