#!/usr/bin/env python3
"""Check that a `sae train` run directory loads unchanged in the real Python tools.

Loads RUN_DIR/saelens with SAELens' `SAE.load_from_disk` and, where the run has one (TopK),
RUN_DIR/sparsify with sparsify's `SparseCoder.load_from_disk`, runs them on rows of a shard,
and checks that
  * both reconstruct identically (they hold the same weights in two layouts),
  * a run without sparsify/ is a SAELens jumprelu SAE with a threshold (BatchTopK,
    Matryoshka) or a standard one (ReLU + L1),
  * the FVU on the shard (sparsify's own, or from SAELens' reconstruction) matches the held-out
    FVU in RUN_DIR/summary.json (when the shard is the run's held-out shard),
  * SAELens' sparsity.safetensors has one entry per latent.

Usage: scripts/check-python-loaders.sh RUN_DIR SHARD [--rows N] [--expect-heldout]
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("shard", type=Path)
    parser.add_argument("--rows", type=int, default=0, help="rows to use (0: all)")
    parser.add_argument("--expect-heldout", action="store_true",
                        help="the shard is the run's held-out set: compare FVU with summary.json")
    args = parser.parse_args()

    from sae_lens import SAE
    from sparsify import SparseCoder

    shard = load_file(str(args.shard))
    x = shard["activations"].float()
    if x.ndim == 3:
        x = x[:, 0, :]
    if args.rows:
        x = x[: args.rows]

    saelens_sae = SAE.load_from_disk(str(args.run_dir / "saelens"), device="cpu")
    print(f"SAELens:  {type(saelens_sae).__name__} d_in={saelens_sae.cfg.d_in} "
          f"d_sae={saelens_sae.cfg.d_sae} k={getattr(saelens_sae.cfg, 'k', None)}")
    with torch.no_grad():
        x_hat_saelens = saelens_sae.decode(saelens_sae.encode(x)).float()
        centred = (x - x.mean(dim=0)).pow(2).sum()
        fvu = float((x - x_hat_saelens).pow(2).sum() / centred)
    ok = True
    if (args.run_dir / "sparsify").exists():
        sparsify_sae = SparseCoder.load_from_disk(args.run_dir / "sparsify", device="cpu")
        print(f"sparsify: {type(sparsify_sae).__name__} d_in={sparsify_sae.d_in} "
              f"latents={sparsify_sae.num_latents} k={sparsify_sae.cfg.k}")
        with torch.no_grad():
            out = sparsify_sae(x)
            x_hat_sparsify = out.sae_out.float()
            fvu = float(out.fvu)
        rel = float((x_hat_sparsify - x_hat_saelens).norm() / x_hat_sparsify.norm())
        print(f"sparsify FVU on {args.shard.name} ({x.shape[0]} rows): {fvu:.6f}")
        print(f"relative difference between the two loaders' reconstructions: {rel:.2e}")
        ok = rel < 1e-5
    else:
        # BatchTopK and Matryoshka runs export SAELens jumprelu alone, ReLU + L1 standard
        # (sparsify cannot run them).
        cfg = json.loads((args.run_dir / "saelens" / "cfg.json").read_text())
        architecture = cfg.get("architecture")
        threshold = getattr(saelens_sae, "threshold", None)
        print(f"SAELens architecture {architecture}; FVU on {args.shard.name} "
              f"({x.shape[0]} rows): {fvu:.6f}")
        if architecture not in ("jumprelu", "standard") or (
                architecture == "jumprelu" and threshold is None):
            print("FAIL: expected a jumprelu SAE with a threshold, or a standard SAE")
            ok = False

    sparsity = load_file(str(args.run_dir / "saelens" / "sparsity.safetensors"))["sparsity"]
    if sparsity.shape != (saelens_sae.cfg.d_sae,):
        print(f"FAIL: sparsity has shape {tuple(sparsity.shape)}")
        ok = False

    if args.expect_heldout:
        summary = json.loads((args.run_dir / "summary.json").read_text())
        ours = summary["heldout"]["fvu"]
        diff = abs(ours - fvu) / fvu
        print(f"sae-wgpu held-out FVU {ours:.6f}; relative difference {diff:.2e}")
        ok = ok and diff < 1e-3

    print("OK" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
