#!/usr/bin/env bash
# The architecture side-by-side of BENCHMARKS.md: sae-wgpu and the real SAELens (with its own
# defaults, and with ours matched) on the same shard, budget, seeds, dictionary and peak lr,
# every SAE evaluated by `sae eval` on the same held-out shard; prints the table (means over
# seeds with their range) and draws each tool's frontier. See scripts/side_by_side.py.
#
#   scripts/side-by-side.sh TRAIN_SHARD HELDOUT_SHARD OUT [--steps N] [--seeds N] [--archs ...]
#       [--ks 16,32,64] [--l1 0.3,1,3] [--l0 0.01,0.1,1] [--expansion 8] [--batch 4096]
#       [--truth SYNTH/truth/true_dictionary.safetensors] [--sae-args "--no-tune"]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${SAE_PY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sae-wgpu/pyloaders}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q eai-sparsify sae-lens
fi
exec "$venv/bin/python" "$here/side_by_side.py" "$@"
