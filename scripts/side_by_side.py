#!/usr/bin/env python3
"""The architecture side-by-side of BENCHMARKS.md, built so that it cannot flatter us: every
architecture trained by `sae train` (one sweep: architectures × sparsities × seeds in one pass
over the data) and by the real SAELens package twice, with its own defaults (b_dec from zeros,
a constant learning rate after the warm-up, no penalty warm-up) and with ours matched (our
b_dec initialisation, schedule and penalty warm-up); the same shard, budget, batch, dictionary,
seeds and peak learning rate for all. Every SAE is then evaluated by `sae eval` on the same
held-out shard, and the table printed: per tool and setting, the mean over seeds of L0 and
held-out FVU with their spread (and, given the truth of synthetic data, the mean max cosine of
the true features to the decoder rows); `sae frontier` draws each tool's frontier.

Usage (scripts/side-by-side.sh wraps it in the scripts' virtualenv):
  side-by-side.sh TRAIN HELDOUT OUT [--steps N] [--seeds N] [--archs topk,batchtopk,...]
      [--ks 16,32,64] [--l1 1] [--l0 1] [--expansion 8] [--batch 4096] [--truth TRUTH]
      [--matryoshka-widths W,...] [--sae-args "..."]

--steps defaults to one pass over TRAIN. A budget is only a comparison once both tools have
converged: look at the loss curves (OUT/ours/*/loss.png) and raise --steps until they are flat.
"""

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PENALIZED = {"relu": ("l1", "--l1-coefficient"), "jumprelu": ("l0", "--l0-coefficient")}


def shard_shape(path, tensor="activations"):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))[tensor]["shape"]


def csv(kind):
    return lambda s: [kind(v) for v in s.split(",") if v]


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("train")
    p.add_argument("heldout")
    p.add_argument("out")
    p.add_argument("--steps", type=int, default=0, help="optimiser steps (0: one pass)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per setting and tool")
    p.add_argument("--archs", type=csv(str), default=csv(str)("topk,batchtopk,matryoshka,relu,jumprelu"))
    p.add_argument("--ks", type=csv(int), default=[16, 32, 64])
    p.add_argument("--l1", type=csv(float), default=[1.0], help="relu's λ values (a frontier)")
    p.add_argument("--l0", type=csv(float), default=[1.0], help="jumprelu's λ values")
    p.add_argument("--expansion", type=int, default=8)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--lr", type=float, default=0.0, help="peak lr (0: ours for the dictionary)")
    p.add_argument("--matryoshka-widths", default="")
    p.add_argument("--truth", default="", help="a synthetic truth/true_dictionary.safetensors")
    p.add_argument("--sae-bin", default=os.path.join(HERE, "..", "target", "release", "sae"))
    p.add_argument("--sae-args", default="", help="more flags for sae train")
    p.add_argument("--threads", type=int, default=0, help="torch threads for SAELens")
    return p.parse_args()


def budget(args):
    rows, d_in = shard_shape(args.train)
    steps = args.steps or rows // args.batch
    d_sae = d_in * args.expansion
    lr = args.lr or 2e-4 * (16384 / d_sae) ** 0.5
    return steps, d_sae, lr


def sparsities(args, arch):
    if arch in PENALIZED:
        return [(PENALIZED[arch][0], c) for c in (args.l1 if arch == "relu" else args.l0)]
    return [("k", k) for k in args.ks]


def train_ours(args, steps, lr):
    """One sweep: every architecture, sparsity and seed from one pass over the data."""
    out = os.path.join(args.out, "ours")
    cmd = [args.sae_bin, "train", args.train, "--out", out, "--overwrite",
           "--architecture", ",".join(args.archs), "--expansion-factor", str(args.expansion),
           "--batch-size", str(args.batch), "--tokens", str(steps * args.batch),
           "--lr", str(lr), "--seed", ",".join(str(s) for s in range(args.seeds)),
           "--eval-fraction", "0", "--checkpoint-every", "0", "--quiet"]
    if any(a not in PENALIZED for a in args.archs):
        cmd += ["--k", ",".join(map(str, args.ks))]
    if "relu" in args.archs:
        cmd += ["--l1-coefficient", ",".join(map(str, args.l1))]
    if "jumprelu" in args.archs:
        cmd += ["--l0-coefficient", ",".join(map(str, args.l0))]
    if args.matryoshka_widths:
        cmd += ["--matryoshka-widths", args.matryoshka_widths]
    cmd += args.sae_args.split()
    started = time.time()
    subprocess.run(cmd, check=True)
    seconds = time.time() - started
    sweep = os.path.join(out, "sweep.json")
    dirs = ([os.path.join(out, r["dir"]) for r in json.load(open(sweep))["runs"]]
            if os.path.exists(sweep) else [out])
    runs = []
    for d in dirs:
        config = json.load(open(os.path.join(d, "config.json")))["config"]
        arch = config["architecture"]
        if arch in PENALIZED:
            name = PENALIZED[arch][0]
            sparsity = (name, config[f"{name}_coefficient"])
        else:
            sparsity = ("k", config["k"])
        runs.append({"tool": "sae-wgpu", "arch": arch, "sparsity": sparsity,
                     "seed": config["seed"], "dir": d})
    log({"tool": "sae-wgpu sweep", "members": len(runs), "seconds": seconds,
         "tokens_per_s_per_member": steps * args.batch * len(runs) / seconds}, args)
    return runs


def train_saelens(args, steps, lr, arch, sparsity, seed, own):
    """SAELens with its own defaults (`own`) or with ours matched."""
    variant = "saelens" if own else "saelens-matched"
    name, value = sparsity
    d = os.path.join(args.out, f"{variant}-{arch}-{name}{value:g}-s{seed}")
    cmd = [sys.executable, os.path.join(HERE, "saelens_train.py"), "--architecture", arch,
           "--shard", args.train, "--out", d, "--expansion-factor", str(args.expansion),
           "--batch-size", str(args.batch), "--tokens", str(steps * args.batch),
           "--lr", str(lr), "--lr-warmup-steps", str(min(steps // 10, 1000)),
           "--seed", str(seed)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if name == "k":
        cmd += ["--k", str(value)]
    else:
        cmd += [f"--{name}-coefficient", str(value)]
        if not own:
            cmd += [f"--{name}-warmup-steps", str(max(steps // 20, 1))]  # sae train's default
    if arch == "matryoshka" and args.matryoshka_widths:
        cmd += ["--matryoshka-widths", args.matryoshka_widths]
    if own:
        cmd += ["--schedule", "saelens", "--b-dec-init", "zeros"]
    result = subprocess.run(cmd, check=True, capture_output=True, text=True)
    log(json.loads(result.stdout.strip().splitlines()[-1]), args)
    return {"tool": variant, "arch": arch, "sparsity": sparsity, "seed": seed, "dir": d}


def evaluate(args, run):
    result = subprocess.run([args.sae_bin, "eval", run["dir"], args.heldout, "--json"],
                            check=True, capture_output=True, text=True)
    e = json.loads(result.stdout)
    row = dict(run, fvu=e["fvu"], l0=e["l0"], dead=e["dead_frac"], dense=e["dense_frac"])
    if args.truth:
        row["mmcs"] = mean_max_cosine(args.truth, run["dir"])
    return row


def mean_max_cosine(truth_path, sae_dir):
    """Each true feature's best cosine with a decoder row, averaged over the true features."""
    import torch
    from safetensors.torch import load_file

    truth = load_file(truth_path)["features"].double()
    for root, _, files in os.walk(sae_dir):
        for f in ("sae.safetensors", "sae_weights.safetensors"):
            if f in files:
                w = load_file(os.path.join(root, f))["W_dec"].double()
                t = truth / truth.norm(dim=1, keepdim=True)
                w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
                return (t @ w.T).max(dim=1).values.mean().item()
    raise SystemExit(f"side-by-side: no decoder under {sae_dir}")


def log(record, args):
    with open(os.path.join(args.out, "times.jsonl"), "a") as f:
        f.write(json.dumps(record) + "\n")


def spread(values, digits):
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{min(values):.{digits}f}–{max(values):.{digits}f}]"


def table(rows, truth):
    """Markdown: one line per architecture, sparsity and tool, means over seeds with range."""
    groups = {}
    for r in rows:
        groups.setdefault((r["arch"], tuple(r["sparsity"]), r["tool"]), []).append(r)
    head = "| architecture | setting | tool | seeds | L0 | held-out FVU | dense |"
    head += " mean max cosine |" if truth else ""
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for (arch, (name, value), tool), rs in sorted(groups.items()):
        line = (f"| {arch} | {name} {value:g} | {tool} | {len(rs)} | "
                f"{spread([r['l0'] for r in rs], 1)} | {spread([r['fvu'] for r in rs], 4)} | "
                f"{statistics.fmean(r['dense'] for r in rs):.3f} |")
        if truth:
            line += f" {spread([r['mmcs'] for r in rs], 3)} |"
        lines.append(line)
    return "\n".join(lines)


def main():
    args = parse()
    os.makedirs(args.out, exist_ok=True)
    steps, d_sae, lr = budget(args)
    print(f"side-by-side: {steps} steps of {args.batch}, d_sae {d_sae}, lr {lr:.3g}, "
          f"{args.seeds} seeds", file=sys.stderr)
    runs = train_ours(args, steps, lr)
    for arch in args.archs:
        for sparsity in sparsities(args, arch):
            for seed in range(args.seeds):
                for own in (True, False):
                    runs.append(train_saelens(args, steps, lr, arch, sparsity, seed, own))
    rows = [evaluate(args, r) for r in runs]
    with open(os.path.join(args.out, "eval.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    for tool in ("sae-wgpu", "saelens", "saelens-matched"):
        dirs = [r["dir"] for r in rows if r["tool"] == tool]
        subprocess.run([args.sae_bin, "frontier", *dirs, "--eval", args.heldout,
                        "--out", os.path.join(args.out, f"frontier-{tool}"), "--quiet"],
                       check=True)
    md = table(rows, bool(args.truth))
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
