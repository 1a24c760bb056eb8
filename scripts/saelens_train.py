#!/usr/bin/env python3
"""Train an SAE with the real SAELens package on an activation shard, for the side-by-side
with `sae train` in BENCHMARKS.md: the same shard, token budget, batch size, dictionary, k,
learning rate and schedule, b_dec initialised as `sae train` does (the geometric median of the
first 32768 rows; --b-dec-init zeros keeps SAELens' own); SAELens' defaults for the rest.
Saves SAELens' inference model (BatchTopK and Matryoshka as JumpReLU, as SAELens does) into
OUT, which `sae eval OUT heldout` reads, and prints one JSON line with the training time and
tokens/s.

Usage (in the scripts' virtualenv, see check-python-loaders.sh):
  python scripts/saelens_train.py --architecture topk|batchtopk|matryoshka|relu|jumprelu \
      --shard train_0000.safetensors --out runs/saelens-topk --k 32 --expansion-factor 8 \
      --batch-size 4096 --tokens 64983 --lr 4e-4 [--matryoshka-widths 288,576,...] [--seed 0]
"""

import argparse
import json
import time

import torch
from safetensors.torch import load_file


def geometric_median(points: torch.Tensor, iterations: int = 100, tol: float = 1e-5):
    """Weiszfeld's algorithm in f64 from the mean, weights 1/max(distance, 1e-12), stopping when
    the objective changes by less than tol (relative): src/sae/init.rs's geometric_median."""
    p = points.double()
    g = p.mean(dim=0)
    previous = (p - g).norm(dim=1).sum()
    for _ in range(iterations):
        w = 1.0 / (p - g).norm(dim=1).clamp_min(1e-12)
        g = (w[:, None] * p).sum(dim=0) / w.sum()
        current = (p - g).norm(dim=1).sum()
        if abs(previous - current) <= tol * max(float(previous), 1e-30):
            break
        previous = current
    return g.float()


def decay_steps(args, steps: int) -> int:
    """The steps of the final linear decay: sae train's default (a fifth of the steps) or
    --lr-decay-steps for our schedule, none for SAELens' own."""
    if args.schedule == "saelens":
        return 0
    decay = steps // 5 if args.lr_decay_steps < 0 else args.lr_decay_steps
    return min(decay, max(steps - args.lr_warmup_steps, 0))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--architecture",
                        choices=["topk", "batchtopk", "matryoshka", "relu", "jumprelu"],
                        required=True)
    parser.add_argument("--shard", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--expansion-factor", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--tokens", type=int, default=0, help="0: every row of the shard once")
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--lr-warmup-steps", type=int, default=0)
    parser.add_argument("--matryoshka-widths", default="")
    parser.add_argument("--l1-coefficient", type=float, default=1.0, help="relu (standard) only")
    parser.add_argument("--l1-warmup-steps", type=int, default=0, help="relu (standard) only")
    parser.add_argument("--l0-coefficient", type=float, default=1.0, help="jumprelu only")
    parser.add_argument("--l0-warmup-steps", type=int, default=0, help="jumprelu only")
    parser.add_argument("--l0-penalty", choices=["step", "tanh"], default="step",
                        help="jumprelu only")
    parser.add_argument("--jumprelu-bandwidth", type=float, default=0.05)
    parser.add_argument("--jumprelu-init-threshold", type=float, default=0.01)
    parser.add_argument("--schedule", choices=["ours", "saelens"], default="ours",
                        help="ours: warm-up, constant, then linear decay to 0 over the last "
                             "--lr-decay-steps (sae train's); saelens: warm-up then constant "
                             "(SAELens' default)")
    parser.add_argument("--lr-decay-steps", type=int, default=-1,
                        help="with --schedule ours: default the last 20%% of the steps, as sae "
                             "train")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--b-dec-init", choices=["geometric-median", "zeros"],
                        default="geometric-median",
                        help="sae train's default (Weiszfeld on the first 32768 training rows), "
                             "or SAELens' own zeros")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    import sae_lens
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    x = load_file(args.shard)["activations"].float()
    d_in = x.shape[1]
    d_sae = d_in * args.expansion_factor
    tokens = args.tokens or x.shape[0]
    steps = tokens // args.batch_size
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(args.seed))

    def batches():
        position = 0
        while True:
            if position + args.batch_size > x.shape[0]:
                position = 0
            yield x[order[position : position + args.batch_size]]
            position += args.batch_size

    common = dict(d_in=d_in, d_sae=d_sae, k=args.k, device="cpu", dtype="float32")
    if args.architecture == "relu":
        # SAELens `standard`: ReLU + decoder-norm weighted L1; its trainer clips the gradient
        # norm to 1 and initialises decoder rows at norm 0.1, as `sae train` does.
        del common["k"]
        sae = sae_lens.StandardTrainingSAE(sae_lens.StandardTrainingSAEConfig(
            l1_coefficient=args.l1_coefficient, l1_warm_up_steps=args.l1_warmup_steps,
            **common))
    elif args.architecture == "jumprelu":
        # SAELens `jumprelu`: θ trained directly (kept ≥ 0), rectangle-kernel estimators, the
        # same init as `standard` (decoder norm 0.1, W_enc = W_decᵀ) and gradient clipping.
        del common["k"]
        sae = sae_lens.JumpReLUTrainingSAE(sae_lens.JumpReLUTrainingSAEConfig(
            l0_coefficient=args.l0_coefficient, l0_warm_up_steps=args.l0_warmup_steps,
            jumprelu_sparsity_loss_mode=args.l0_penalty,
            jumprelu_bandwidth=args.jumprelu_bandwidth,
            jumprelu_init_threshold=args.jumprelu_init_threshold, **common))
    elif args.architecture == "topk":
        sae = sae_lens.TopKTrainingSAE(sae_lens.TopKTrainingSAEConfig(**common))
    elif args.architecture == "batchtopk":
        sae = sae_lens.BatchTopKTrainingSAE(sae_lens.BatchTopKTrainingSAEConfig(**common))
    else:
        widths = [int(w) for w in args.matryoshka_widths.split(",") if w] or [
            d_sae // 16, d_sae // 8, d_sae // 4, d_sae // 2, d_sae]
        if widths[-1] != d_sae:
            widths.append(d_sae)
        sae = sae_lens.MatryoshkaBatchTopKTrainingSAE(
            sae_lens.MatryoshkaBatchTopKTrainingSAEConfig(matryoshka_widths=widths, **common))
    cfg = SAETrainerConfig(
        total_training_samples=steps * args.batch_size,
        train_batch_size_samples=args.batch_size,
        lr=args.lr,
        # sae train's schedule: linear warmup, constant, then linear decay to 0 at the end.
        lr_warm_up_steps=args.lr_warmup_steps,
        lr_decay_steps=decay_steps(args, steps),
        lr_end=0.0 if args.schedule == "ours" else args.lr / 10,  # unused when constant
        device="cpu",
        n_batches_for_norm_estimate=1,
    )
    if args.b_dec_init == "geometric-median":
        # What `sae train` does by default: Weiszfeld on the first 32768 training rows.
        with torch.no_grad():
            sae.b_dec.copy_(geometric_median(x[order[:32768]]))
    trainer = SAETrainer(cfg, sae, batches())
    started = time.time()
    trainer.fit()
    seconds = time.time() - started
    sae.save_inference_model(args.out)
    print(json.dumps({
        "tool": f"sae-lens {sae_lens.__version__}",
        "architecture": args.architecture,
        "steps": trainer.n_training_steps,
        "tokens": steps * args.batch_size,
        "seconds": seconds,
        "tokens_per_s": steps * args.batch_size / seconds,
        "out": args.out,
        "device": "cpu",
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
