"""EleutherAI sparsify on cached activation shards, for the side-by-side with `sae train`.

Trains sparsify's own SparseCoder (its forward, its TopK, its decoder-norm handling) with the
settings `sae train` uses: Adam, lr 2e-4·√(2¹⁴/d_sae), linear warm-up then linear decay,
b_dec = mean of the first batch, unit-norm decoder with the parallel gradient removed, no AuxK.
Reports tokens/s over the steps after warm-up, peak GPU memory and the held-out FVU (centred
by the mean held-out row, sparsify's definition), as one JSON line.

    python3 sparsify_bench.py --train A.safetensors [B …] --eval H.safetensors \
        --k 32 --d-sae 4608 --batch 4096 --steps 200 --precision bf16
"""

import argparse
import json
import time

import torch
from safetensors.torch import load_file
from sparsify import SparseCoder, SparseCoderConfig


def rows(paths, device):
    parts = [load_file(p)["activations"] for p in paths]
    x = torch.cat([p.reshape(p.shape[0], -1) for p in parts]).to(torch.float32)
    return x.to(device)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", nargs="+", required=True)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--d-sae", type=int, required=True)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup-steps", type=int, default=None,
                    help="lr warm-up (default: 10%% of the steps, as sae train); also steps not timed")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    if args.warmup_steps is None:
        args.warmup_steps = max(1, min(args.steps // 10, 1000))
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = rows(args.train, device)
    heldout = rows([args.eval], device)
    d_in = x.shape[1]
    sae = SparseCoder(d_in, SparseCoderConfig(k=args.k, num_latents=args.d_sae), device=device)
    # sparsify's forward autocasts to bf16 on CUDA; the undecorated function is its fp32 path.
    forward = SparseCoder.forward if args.precision == "bf16" else SparseCoder.forward.__wrapped__
    lr = 2e-4 / (args.d_sae / 2**14) ** 0.5
    opt = torch.optim.Adam(sae.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: s / args.warmup_steps
        if s < args.warmup_steps
        else max(0.0, (args.steps - s) / max(1, args.steps - args.warmup_steps)),
    )
    n = x.shape[0]
    order = torch.randperm(n, device=device)
    sae.b_dec.data = x[order[: args.batch]].mean(0)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    timed_start = None
    for step in range(args.steps):
        if step == args.warmup_steps:
            sync()
            timed_start = time.perf_counter()
        start = (step * args.batch) % max(1, n - args.batch + 1)
        batch = x[order[start : start + args.batch]]
        out = forward(sae, batch)
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        sae.set_decoder_norm_to_unit_norm()
    sync()
    seconds = time.perf_counter() - (timed_start or time.perf_counter())
    timed_steps = max(0, args.steps - args.warmup_steps)

    sse, total = 0.0, 0.0
    mean = heldout.mean(0)
    with torch.no_grad():
        for i in range(0, heldout.shape[0], args.batch):
            h = heldout[i : i + args.batch]
            out = forward(sae, h)
            sse += float((out.sae_out.float() - h).pow(2).sum())
            total += float((h - mean).pow(2).sum())
    print(json.dumps({
        "trainer": f"sparsify ({args.precision})",
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "d_in": d_in,
        "d_sae": args.d_sae,
        "k": args.k,
        "batch": args.batch,
        "steps": args.steps,
        "tokens_per_s": timed_steps * args.batch / seconds if seconds > 0 else None,
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else None,
        "heldout_fvu": sse / total,
    }))


if __name__ == "__main__":
    main()
