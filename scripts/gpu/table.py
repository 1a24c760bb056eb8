"""Prints the table of scripts/gpu/run.sh from the JSON lines it left in OUT_DIR."""

import json
import sys
from pathlib import Path


def lines(path):
    p = Path(path)
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()] if p.exists() else []


def mib(b):
    return f"{b / 2**20:,.0f}" if b else "-"


out = Path(sys.argv[1] if len(sys.argv) > 1 else "gpu-bench")
adapters = lines(out / "adapters.json")
print(f"adapter: {adapters[0]['name']} ({adapters[0]['backend']}, {adapters[0]['driver']} "
      f"{adapters[0]['driver_info']})" if adapters else "adapter: ?")

print("\n| architecture | shape | dtype | matmul | tokens/s | ms/step | host ms/step | GPU busy | peak MiB (min) | tiles |")
print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
for r in lines(out / "train.jsonl"):
    print(f"| {r.get('architecture', 'topk')} | {r['shape']} | {r['dtype']} | {r.get('matmul', 'f32')} | "
          f"{r['tokens_per_s']:,.0f} | {r['ms_per_step']:.2f} | "
          f"{r['host_ms_per_step']:.3f} | {100 * r['gpu_busy_fraction']:.0f}% | "
          f"{mib(r['peak_gpu_bytes'])} ({mib(r['min_gpu_bytes'])}) | {r['gemm_tiles']} |")

print("\n| data | trainer | tokens/s | peak MiB | held-out FVU |")
print("| --- | --- | ---: | ---: | ---: |")
for r in lines(out / "side.jsonl"):
    tps = f"{r['tokens_per_s']:,.0f}" if r.get("tokens_per_s") else "-"
    fvu = f"{r['heldout_fvu']:.4f}" if r.get("heldout_fvu") is not None else "-"
    print(f"| {r['data']} | {r['trainer']} | {tps} | {mib(r.get('peak_gpu_bytes'))} | {fvu} |")

kernels = lines(out / "kernels.jsonl")
if kernels:
    print("\n| kernel | shape | ms | GFLOP/s |")
    print("| --- | --- | ---: | ---: |")
    for r in kernels:
        g = f"{r['gflops']:.2f}" if r.get("gflops") else "-"
        print(f"| {r['kernel']} | {r['shape']} | {r['ms_median']:.3f} | {g} |")
