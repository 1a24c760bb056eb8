#!/usr/bin/env python3
"""Check that a `sae train` run directory loads unchanged in the real Python tools.

Loads RUN_DIR/saelens with SAELens' `SAE.load_from_disk` and RUN_DIR/sparsify with sparsify's
`SparseCoder.load_from_disk` (whichever the run wrote), runs them on rows of a shard, and checks
that
  * both reconstruct identically where both exist (they hold the same weights in two layouts),
  * a run without sparsify/ is a SAELens jumprelu SAE with a threshold (BatchTopK,
    Matryoshka) or a standard one (ReLU + L1), or their transcoder forms,
  * a transcoder (the run's config.json names a target) predicts its target: the shard's
    target tensor (`--target-tensor`), or the same rows of `--target-shard`; its skip path is
    part of each package's forward,
  * the FVU on the shard (sparsify's own, or from SAELens' output) matches the held-out FVU in
    RUN_DIR/summary.json (when the shard is the run's held-out shard),
  * SAELens' sparsity.safetensors has one entry per latent.

Usage: scripts/check-python-loaders.sh RUN_DIR SHARD [--target-shard FILE] [--rows N]
       [--expect-heldout]
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def rows_of(path: Path, tensor: str, rows: int) -> torch.Tensor:
    values = load_file(str(path))[tensor].float()
    if values.ndim == 3:
        values = values[:, 0, :]
    return values[:rows] if rows else values


def fvu_of(y: torch.Tensor, y_hat: torch.Tensor) -> float:
    return float((y - y_hat).pow(2).sum() / (y - y.mean(dim=0)).pow(2).sum())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("shard", type=Path)
    parser.add_argument("--target-shard", type=Path,
                        help="a transcoder's targets, when they are not in SHARD itself")
    parser.add_argument("--rows", type=int, default=0, help="rows to use (0: all)")
    parser.add_argument("--expect-heldout", action="store_true",
                        help="the shard is the run's held-out set: compare FVU with summary.json")
    args = parser.parse_args()

    from sae_lens import SAE
    from sparsify import SparseCoder

    config = json.loads((args.run_dir / "config.json").read_text())["config"]
    transcoder = bool(config.get("transcoder"))
    x = rows_of(args.shard, config.get("tensor", "activations"), args.rows)
    y = x
    if transcoder:
        target = config.get("target_tensor") or config.get("tensor", "activations")
        y = rows_of(args.target_shard or args.shard, target, args.rows)
        print(f"transcoder: {x.shape[1]} → {y.shape[1]} values per row")

    outputs = {}
    saelens_dir = args.run_dir / "saelens"
    ok = True
    if saelens_dir.exists():
        sae = SAE.load_from_disk(str(saelens_dir), device="cpu")
        architecture = json.loads((saelens_dir / "cfg.json").read_text()).get("architecture")
        print(f"SAELens:  {type(sae).__name__} ({architecture}) d_in={sae.cfg.d_in} "
              f"d_sae={sae.cfg.d_sae} k={getattr(sae.cfg, 'k', None)}")
        with torch.no_grad():
            outputs["SAELens"] = sae(x).float()
        expected = ("jumprelu", "standard", "topk", "transcoder", "skip_transcoder",
                    "jumprelu_transcoder", "jumprelu_skip_transcoder")
        if architecture not in expected or (
                "jumprelu" in architecture and getattr(sae, "threshold", None) is None):
            print(f"FAIL: unexpected SAELens architecture {architecture}")
            ok = False
        if transcoder != ("transcoder" in architecture):
            print(f"FAIL: a {'transcoder' if transcoder else 'SAE'} run exported as {architecture}")
            ok = False
        sparsity = load_file(str(saelens_dir / "sparsity.safetensors"))["sparsity"]
        if sparsity.shape != (sae.cfg.d_sae,):
            print(f"FAIL: sparsity has shape {tuple(sparsity.shape)}")
            ok = False
    if (args.run_dir / "sparsify").exists():
        coder = SparseCoder.load_from_disk(args.run_dir / "sparsify", device="cpu")
        print(f"sparsify: {type(coder).__name__} d_in={coder.d_in} latents={coder.num_latents} "
              f"k={coder.cfg.k} transcode={coder.cfg.transcode} "
              f"skip_connection={coder.cfg.skip_connection}")
        with torch.no_grad():
            out = coder(x, y if transcoder else None)
        outputs["sparsify"] = out.sae_out.float()
        print(f"sparsify's own FVU: {float(out.fvu):.6f}")
    if not outputs:
        print("FAIL: neither saelens/ nor sparsify/ in the run directory")
        return 1

    fvu = None
    for name, y_hat in outputs.items():
        fvu = fvu_of(y, y_hat)
        print(f"{name} FVU on {args.shard.name} ({x.shape[0]} rows): {fvu:.6f}")
    if len(outputs) == 2:
        a, b = outputs["sparsify"], outputs["SAELens"]
        rel = float((a - b).norm() / a.norm())
        print(f"relative difference between the two loaders' outputs: {rel:.2e}")
        ok = ok and rel < 1e-5

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
