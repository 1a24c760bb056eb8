#!/usr/bin/env bash
# The transcoder side-by-side of BENCHMARKS.md: a TopK skip-transcoder trained by sae-wgpu and
# by sparsify's own SparseCoder (`transcode`, `skip_connection`; scripts/gpu/sparsify_bench.py)
# on the same paired rows with the same k, width, batch, steps, learning rate and start, for
# several seeds, each evaluated on the same held-out pairs; one table at the end.
#
#   scripts/transcoder-side-by-side.sh TRAIN HELDOUT OUT
#   e.g. scripts/transcoder-side-by-side.sh ../shared/data/smollm2-135m-l15/mlp15/{train,heldout}.safetensors out
#
# Settings (environment): INPUT (mlp_in) and TARGET (mlp_out) tensors, K (32), D_SAE (1152),
# BATCH (512), STEPS (256), SEEDS (0 1 2), SAE_BIN (target/release/sae), SAE_ARGS (more flags
# for sae train, e.g. --matmul f16), PRECISION (fp32; bf16 on a GPU is sparsify's default).
set -euo pipefail
train="${1:?training pairs}" heldout="${2:?held-out pairs}" out="${3:?output directory}"
here="$(cd "$(dirname "$0")" && pwd)"
sae="${SAE_BIN:-$here/../target/release/sae}"
input="${INPUT:-mlp_in}" target="${TARGET:-mlp_out}"
k="${K:-32}" d_sae="${D_SAE:-1152}" batch="${BATCH:-512}" steps="${STEPS:-256}"
seeds="${SEEDS:-0 1 2}" precision="${PRECISION:-fp32}"
venv="${SAE_PY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sae-wgpu/pyloaders}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q eai-sparsify sae-lens
fi
# sparsify's Triton decoder needs a CUDA device; without one it uses its eager decoder.
command -v nvidia-smi >/dev/null 2>&1 || export SPARSIFY_DISABLE_TRITON=1
mkdir -p "$out"
: > "$out/results.jsonl"
for seed in $seeds; do
    "$venv/bin/python" "$here/gpu/sparsify_bench.py" --train "$train" --eval "$heldout" \
        --tensor "$input" --target-tensor "$target" --skip --k "$k" --d-sae "$d_sae" \
        --batch "$batch" --steps "$steps" --precision "$precision" --seed "$seed" \
        --log "$out/sparsify-$seed.fvu" | tail -n 1 >> "$out/results.jsonl"
    run="$out/sae-wgpu-$seed"
    rm -rf "$run"
    # sparsify's schedule (decay from the warm-up on), not our default's final 20%.
    # shellcheck disable=SC2086  # SAE_ARGS is a list of flags
    "$sae" train "$train" --tensor "$input" --target-tensor "$target" --skip --eval "$heldout" \
        --k "$k" --d-sae "$d_sae" --batch-size "$batch" --tokens $((steps * batch)) \
        --b-dec-init mean --auxk-alpha 0 --lr-decay-steps "$steps" --seed "$seed" \
        --out "$run" --quiet ${SAE_ARGS:-}
    "$venv/bin/python" - "$run" "$seed" >> "$out/results.jsonl" <<'PY'
import json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
print(json.dumps({"trainer": "sae-wgpu " + s["matmul"], "seed": int(sys.argv[2]),
                  "tokens_per_s": s["tokens_per_s"], "heldout_fvu": s["heldout"]["fvu"]}))
PY
done
"$venv/bin/python" - "$out/results.jsonl" <<'PY'
import json, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs[r["trainer"]].append(r["heldout_fvu"])
print("| trainer | held-out FVU per seed | mean |\n| --- | --- | ---: |")
for trainer, fvus in runs.items():
    print(f"| {trainer} | {', '.join(f'{f:.4f}' for f in fvus)} | {sum(fvus) / len(fvus):.4f} |")
PY
