#!/usr/bin/env bash
# The architecture side-by-side of BENCHMARKS.md: every architecture trained by sae-wgpu (one
# sweep, one pass over the data) and by the real SAELens package (scripts/saelens_train.py) on
# the same shard with the same budget, batch, dictionary, k and learning rate; then every SAE
# evaluated by `sae eval` on the same held-out shard, and the frontier drawn.
#
#   scripts/side-by-side.sh TRAIN_SHARD HELDOUT_SHARD OUT
#
# Settings (environment): ARCHS (topk,batchtopk,matryoshka,relu,jumprelu), KS (16,32,64; relu
# and jumprelu take λ = 1, the default of both tools, instead), EXPANSION (8),
# BATCH (4096), TOKENS (every training row), SAE_BIN (target/release/sae), SAE_ARGS (more flags
# for sae train, e.g. --adapter 1), TORCH_DEVICE is not used: SAELens trains on the CPU here.
# Writes OUT/sweep (ours), OUT/saelens-<arch>-k<k>, OUT/times.jsonl, OUT/eval.jsonl and
# OUT/frontier/ (ours) and OUT/frontier-saelens/ (frontier.json, frontier.png).
set -euo pipefail
train="${1:?train shard}" heldout="${2:?held-out shard}" out="${3:?output directory}"
here="$(cd "$(dirname "$0")" && pwd)"
sae="${SAE_BIN:-$here/../target/release/sae}"
archs="${ARCHS:-topk,batchtopk,matryoshka,relu,jumprelu}" ks="${KS:-16,32,64}"
expansion="${EXPANSION:-8}" batch="${BATCH:-4096}"
venv="${SAE_PY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/sae-wgpu/pyloaders}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q eai-sparsify sae-lens
fi
rows=$("$venv/bin/python" -c "
import json, struct, sys
f = open(sys.argv[1], 'rb'); n = struct.unpack('<Q', f.read(8))[0]
print(json.loads(f.read(n))['activations']['shape'][0])" "$train")
tokens="${TOKENS:-$rows}"
steps=$((tokens / batch))
d_in=$("$venv/bin/python" -c "
import json, struct, sys
f = open(sys.argv[1], 'rb'); n = struct.unpack('<Q', f.read(8))[0]
print(json.loads(f.read(n))['activations']['shape'][1])" "$train")
d_sae=$((d_in * expansion))
# Our default learning rate for this dictionary, given to both tools.
lr=$("$venv/bin/python" -c "print(2e-4 * (16384 / $d_sae) ** 0.5)")
warmup=$((steps / 10))
mkdir -p "$out"
: >"$out/times.jsonl"
read -r -a extra <<<"${SAE_ARGS:-}"

start=$(date +%s.%N)
# --k only when the TopK family is in the sweep (the ReLU family takes a coefficient instead).
k_args=()
case ",$archs," in *,topk,* | *,batchtopk,* | *,matryoshka,*) k_args=(--k "$ks") ;; esac
"$sae" train "$train" --out "$out/sweep" --overwrite --architecture "$archs" "${k_args[@]}" \
    --expansion-factor "$expansion" --batch-size "$batch" --tokens "$tokens" --lr "$lr" \
    --lr-warmup-steps "$warmup" --eval-fraction 0 --checkpoint-every 0 --quiet "${extra[@]}"
end=$(date +%s.%N)
"$venv/bin/python" -c "
import json, sys
s, e, tokens, members = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(json.dumps({'tool': 'sae-wgpu sweep', 'members': members, 'tokens': tokens,
                  'seconds': e - s, 'tokens_per_s_per_member': tokens * members / (e - s)}))
" "$start" "$end" "$((steps * batch))" "$(ls "$out"/sweep/config.json "$out"/sweep/*/config.json 2>/dev/null | wc -l)" >>"$out/times.jsonl"

saelens_dirs=()
penalty_warmup=$((steps / 20 > 0 ? steps / 20 : 1)) # sae train's default
for arch in ${archs//,/ }; do
    if [ "$arch" = relu ] || [ "$arch" = jumprelu ]; then
        # The ReLU family takes a coefficient, λ = 1 (L1 for relu, L0 for jumprelu), not k.
        penalty=$([ "$arch" = relu ] && echo l1 || echo l0)
        dir="$out/saelens-$arch-${penalty}_1"
        "$venv/bin/python" "$here/saelens_train.py" --architecture "$arch" --shard "$train" \
            --out "$dir" --expansion-factor "$expansion" --batch-size "$batch" \
            --tokens "$tokens" --lr "$lr" --lr-warmup-steps "$warmup" \
            "--$penalty-coefficient" 1 "--$penalty-warmup-steps" "$penalty_warmup" 2>/dev/null \
            | tail -1 >>"$out/times.jsonl"
        saelens_dirs+=("$dir")
        continue
    fi
    for k in ${ks//,/ }; do
        dir="$out/saelens-$arch-k$k"
        "$venv/bin/python" "$here/saelens_train.py" --architecture "$arch" --shard "$train" \
            --out "$dir" --k "$k" --expansion-factor "$expansion" --batch-size "$batch" \
            --tokens "$tokens" --lr "$lr" --lr-warmup-steps "$warmup" 2>/dev/null \
            | tail -1 >>"$out/times.jsonl"
        saelens_dirs+=("$dir")
    done
done

# Two pictures: SAELens saves BatchTopK and Matryoshka as jumprelu, which would merge them.
"$sae" frontier "$out/sweep" --eval "$heldout" --out "$out/frontier" --quiet
"$sae" frontier "${saelens_dirs[@]}" --eval "$heldout" --out "$out/frontier-saelens" --quiet
echo "wrote $out/frontier{,-saelens}/frontier.{json,png} and $out/times.jsonl"
