#!/usr/bin/env bash
# The GPU benchmarks in one go, and sparsify beside us on the same shards.
#
#   scripts/gpu/run.sh [OUT_DIR]           (default gpu-bench/)
#
# On a machine with an NVIDIA GPU (nvidia-smi works): `sae bench kernels --all-shapes`,
# `sae bench train` at batch 4096, d_in 576 / 2048 / 4096 × 8× / 32×, k 32 (and every
# architecture at d_in 576 × 8×), each with `--matmul f32` and, where the adapter has cooperative
# matrices (tensor cores), `--matmul f16`; then `sae train` (f32, and f16 where it can) and
# EleutherAI sparsify (fp32, and its default bf16 autocast) on the same synthetic shards
# (and on real ones with SAE_REAL_TRAIN / SAE_REAL_EVAL), same k, width, batch and schedule.
# Without one it runs our side only, on whatever adapter wgpu finds (lavapipe), at the quick
# start's small shape, so the whole script is exercised anywhere. Ends with one table
# (scripts/gpu/table.py); every figure is also in OUT_DIR as JSON lines. Meant to finish in
# under 8 minutes on an H100/H200.
#
# What it needs, and how to bring it to a machine without a Rust toolchain (the device tool
# of this project; see its README):
# - a release `sae` binary: `cargo build --release` here, then SAE_BIN=target/release/sae
#   (the default), carried with the working tree;
# - the Vulkan loader (libvulkan.so.1): carry the `.gl/` Debian packages and unpack them first
#   (`for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig`);
# - for the sparsify side: Python 3 with torch (present on the GPU machine) and the
#   eai-sparsify wheel with its pure-Python dependencies in `.whl/` (`pip download --no-deps
#   eai-sparsify einops natsort simple-parsing docstring-parser typing-inspect mypy-extensions`);
#   they are installed into a temporary directory, never into the system.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-gpu-bench}"
SAE="${SAE_BIN:-target/release/sae}"
mkdir -p "$OUT"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp/xdg-runtime-$(id -u)}"
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
if [ ! -x "$SAE" ]; then
    echo "no sae binary at $SAE: build one with 'cargo build --release' (or set SAE_BIN)" >&2
    exit 2
fi
if nvidia-smi -L >/dev/null 2>&1; then
    MODE=gpu
    nvidia-smi -L
else
    MODE=cpu
    echo "no NVIDIA GPU: the small shape only, on the adapter wgpu finds"
    # sparsify's Triton decoder needs a CUDA device; without one it uses its eager decoder.
    export SPARSIFY_DISABLE_TRITON=1
fi
PY="${PYTHON:-python3}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/sae-gpu-site .whl/*.whl \
        && export PYTHONPATH="/tmp/sae-gpu-site${PYTHONPATH:+:$PYTHONPATH}"
fi
HAVE_SPARSIFY=0
"$PY" -c "import sparsify, torch" 2>/dev/null && HAVE_SPARSIFY=1

"$SAE" adapters --json > "$OUT/adapters.json" || exit 1
# The encoder GEMM's precisions this adapter runs: f16 on its matrix units where it has them.
MATMULS=f32
grep -q EXPERIMENTAL_COOPERATIVE_MATRIX "$OUT/adapters.json" && MATMULS="f32 f16"
echo "matmul: $MATMULS"

echo "== kernels"
if [ "$MODE" = gpu ]; then
    "$SAE" bench kernels --all-shapes --json > "$OUT/kernels.jsonl"
else
    "$SAE" bench kernels --shape 512,64,256,8 --json > "$OUT/kernels.jsonl"
fi

echo "== training steps"
: > "$OUT/train.jsonl"
if [ "$MODE" = gpu ]; then
    for m in $MATMULS; do
        for d in 576 2048 4096; do
            for x in 8 32; do
                "$SAE" bench train --shape "4096,$d,$((d * x)),32" --matmul "$m" --warmup 5 --steps 20 \
                    --timed-steps 2 --json >> "$OUT/train.jsonl"
            done
        done
    done
    "$SAE" bench train --shape 4096,576,4608,32 --dtype f16 --warmup 5 --steps 20 --timed-steps 2 \
        --json >> "$OUT/train.jsonl"
    # Every architecture at the shared real data's width (K: k, or the cap of relu/jumprelu).
    "$SAE" bench train --shape 4096,576,4608,32 --architecture batchtopk,matryoshka \
        --warmup 5 --steps 20 --timed-steps 2 --json >> "$OUT/train.jsonl"
    "$SAE" bench train --shape 4096,576,4608,256 --architecture relu,jumprelu \
        --warmup 5 --steps 20 --timed-steps 2 --json >> "$OUT/train.jsonl"
else
    for m in $MATMULS; do
        "$SAE" bench train --shape 512,64,256,8 --architecture topk,batchtopk,matryoshka,relu,jumprelu \
            --matmul "$m" --warmup 3 --steps 10 --timed-steps 1 --json >> "$OUT/train.jsonl"
    done
fi

echo "== side by side"
: > "$OUT/side.jsonl"
if [ "$MODE" = gpu ]; then
    D=576; ROWS=131072; BATCH=4096; STEPS=300; XF=8
else
    D=64; ROWS=16384; BATCH=512; STEPS=40; XF=4
fi
SYN="$OUT/synthetic"
if [ ! -f "$SYN/heldout/synth_0000.safetensors" ]; then
    "$SAE" synth --out "$SYN/train" --d-in "$D" --n-features $((4 * D)) --rows-per-shard "$ROWS" --shards 1 --seed 1 >/dev/null
    "$SAE" synth --out "$SYN/heldout" --d-in "$D" --n-features $((4 * D)) --rows-per-shard 8192 --shards 1 --seed 1 >/dev/null
fi
side() { # NAME TRAIN EVAL D_IN
    local name="$1" train="$2" eval="$3" d_in="$4" d_sae=$(( $4 * XF ))
    local m run
    for m in $MATMULS; do
        run="$OUT/run-$name-$m"
        rm -rf "$run"
        if "$SAE" train "$train" --eval "$eval" --out "$run" --k 32 --d-sae "$d_sae" --batch-size "$BATCH" \
            --tokens $(( STEPS * BATCH )) --auxk-alpha 0 --b-dec-init mean --matmul "$m" --quiet >/dev/null; then
            "$PY" - "$run" "$name" >> "$OUT/side.jsonl" <<'PY'
import json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
print(json.dumps({"data": sys.argv[2], "trainer": "sae-wgpu " + s.get("matmul", "f32"),
                  "tokens_per_s": s["tokens_per_s"], "peak_gpu_bytes": s.get("peak_gpu_bytes"),
                  "heldout_fvu": (s.get("heldout") or {}).get("fvu")}))
PY
        fi
    done
    if [ "$HAVE_SPARSIFY" = 1 ]; then
        for precision in fp32 bf16; do
            [ "$MODE" = cpu ] && [ "$precision" = bf16 ] && continue
            if result=$("$PY" scripts/gpu/sparsify_bench.py --train "$train" --eval "$eval" --k 32 \
                --d-sae "$d_sae" --batch "$BATCH" --steps "$STEPS" --precision "$precision"); then
                echo "$result" | tail -n 1 | "$PY" -c "import json,sys; r=json.loads(sys.stdin.read()); r['data']='$name'; print(json.dumps(r))" \
                    >> "$OUT/side.jsonl"
            else
                echo "sparsify ($precision) failed on $name" >&2
            fi
        done
    fi
}
side synthetic "$SYN/train/synth_0000.safetensors" "$SYN/heldout/synth_0000.safetensors" "$D"
if [ -n "${SAE_REAL_TRAIN:-}" ] && [ -n "${SAE_REAL_EVAL:-}" ]; then
    side real "$SAE_REAL_TRAIN" "$SAE_REAL_EVAL" 576
fi
[ "$HAVE_SPARSIFY" = 1 ] || echo "sparsify or torch not importable: our side only"

"$PY" scripts/gpu/table.py "$OUT"
