#!/usr/bin/env bash
# Kernel benchmarks on a lent GPU machine (which has no Rust toolchain). Build here and carry
# the binary and the Vulkan loader packages:
#   cargo build --release && mkdir -p .carry && cp target/release/sae .carry/
#   echo /.gl/ >> .git/info/exclude; echo /.carry/ >> .git/info/exclude
#   (download the loader .debs into .gl/ as the device README shows)
# then run `bash scripts/device-bench.sh` there with carry [".carry", ".gl"]. Results land in
# $OUT (adapters.json, kernels.jsonl, and the log).
set -uo pipefail
out="${OUT:-/tmp/sae-bench}"
mkdir -p "$out"
if ! ldconfig -p | grep -q libvulkan; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
sae=./.carry/sae
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv 2>&1 | tee "$out/nvidia-smi.txt"
"$sae" adapters --json | tee "$out/adapters.json"
"$sae" bench kernels --json --all-shapes --reps 20 2>&1 | tee "$out/kernels.jsonl"
