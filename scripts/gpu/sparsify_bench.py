"""EleutherAI sparsify on cached activation shards, for the side-by-side with `sae train`.

Trains sparsify's own SparseCoder (its forward, its TopK, its decoder-norm handling) with the
settings `sae train` uses: Adam, lr 2e-4·√(2¹⁴/d_sae), linear warm-up then linear decay,
b_dec = mean of the first batch, unit-norm decoder with the parallel gradient removed, no AuxK.
Reports tokens/s over the steps after warm-up, peak GPU memory and the held-out FVU (centred
by the mean held-out row, sparsify's definition), as one JSON line.

With --target-tensor, a transcoder as sparsify's trainer makes one (`transcode`, and with
--skip its `skip_connection`): the encoder reads --tensor, the decoder predicts the target;
W_dec starts at zero, at the first batch b_dec = the targets' mean and b_enc = −mean(x)·W_encᵀ;
the decoder is not held at unit norm; the loss is the target's FVU.

    python3 sparsify_bench.py --train A.safetensors [B …] --eval H.safetensors \
        --k 32 --d-sae 4608 --batch 4096 --steps 200 --precision bf16
    python3 sparsify_bench.py --train mlp15/train.safetensors --eval mlp15/heldout.safetensors \
        --tensor mlp_in --target-tensor mlp_out --skip --k 32 --d-sae 1152 --batch 512 --steps 256
"""

import argparse
import json
import time

import torch
from safetensors.torch import load_file
from sparsify import SparseCoder, SparseCoderConfig


def rows(paths, device, tensor="activations"):
    parts = [load_file(p)[tensor] for p in paths]
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
    ap.add_argument("--tensor", default="activations", help="the input tensor")
    ap.add_argument("--target-tensor", help="a transcoder's target tensor (sparsify's transcode)")
    ap.add_argument("--skip", action="store_true", help="sparsify's skip_connection")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log", help="write each step's training FVU here, one per line")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    if args.warmup_steps is None:
        args.warmup_steps = max(1, min(args.steps // 10, 1000))
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    transcode = args.target_tensor is not None
    x = rows(args.train, device, args.tensor)
    heldout = rows([args.eval], device, args.tensor)
    y = rows(args.train, device, args.target_tensor) if transcode else x
    heldout_y = rows([args.eval], device, args.target_tensor) if transcode else heldout
    d_in = x.shape[1]
    cfg = SparseCoderConfig(k=args.k, num_latents=args.d_sae, transcode=transcode,
                            skip_connection=args.skip)
    sae = SparseCoder(d_in, cfg, device=device)
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
    first = order[: args.batch]
    # sparsify's trainer at step 0: b_dec the target's mean; a transcoder's b_enc centres x.
    sae.b_dec.data = y[first].mean(0)
    if transcode:
        sae.encoder.bias.data = -x[first].mean(0) @ sae.encoder.weight.data.T
    log = open(args.log, "w") if args.log else None
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    timed_start = None
    for step in range(args.steps):
        if step == args.warmup_steps:
            sync()
            timed_start = time.perf_counter()
        start = (step * args.batch) % max(1, n - args.batch + 1)
        picked = order[start : start + args.batch]
        out = forward(sae, x[picked], y[picked] if transcode else None)
        out.fvu.backward()
        if log:
            log.write(f"{float(out.fvu):.6f}\n")
        if not transcode:
            sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()
        if not transcode:
            sae.set_decoder_norm_to_unit_norm()
    sync()
    seconds = time.perf_counter() - (timed_start or time.perf_counter())
    timed_steps = max(0, args.steps - args.warmup_steps)

    sse, total = 0.0, 0.0
    mean = heldout_y.mean(0)
    with torch.no_grad():
        for i in range(0, heldout.shape[0], args.batch):
            h, t = heldout[i : i + args.batch], heldout_y[i : i + args.batch]
            out = forward(sae, h, t if transcode else None)
            sse += float((out.sae_out.float() - t).pow(2).sum())
            total += float((t - mean).pow(2).sum())
    print(json.dumps({
        "trainer": f"sparsify ({args.precision})",
        "transcoder": "skip" if args.skip else transcode,
        "seed": args.seed,
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
