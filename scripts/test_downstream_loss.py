#!/usr/bin/env python3
"""Tests scripts/downstream_loss.py on tiny random models built here (nothing is downloaded).

    ~/.cache/sae-wgpu/pyloaders/bin/python scripts/test_downstream_loss.py [--run-dir RUN_DIR]

Checks:
  * an SAE whose reconstruction is exactly its input gives CE_sae = CE_clean, KL_sae = 0 and a
    CE score of 1; one whose reconstruction is zero gives scores of 0;
  * for random SAEs in each layout (sparsify, sparsify with hookpoint subdirectories, SAELens
    jumprelu and topk, a `sae train` run directory) the figures equal an independent computation
    (windows, splice through a pre-hook on the next module, masks and averages written plainly),
    spliced at the rows the shards hold (not position 0, not special tokens) and everywhere
    (--keep-bos-recon), on a Llama and on a GPT-2;
  * the SAE forward equals SAELens' own outputs on the fixtures tests/fixtures/saelens (written
    by scripts/make_input_fixtures.py with SAELens) and sparsify's, where sparsify is installed;
  * bad inputs exit non-zero with one line on stderr and no traceback.
--run-dir: also check a real `sae train` run directory (the model is then built with its width).
"""

import argparse
import contextlib
import io
import json
import math
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

SCRIPTS = Path(__file__).resolve().parent
FIXTURES = SCRIPTS.parent / "tests" / "fixtures"
sys.path.insert(0, str(SCRIPTS))
sys.dont_write_bytecode = True  # no scripts/__pycache__ left in the tree
import downstream_loss as dl  # noqa: E402

VOCAB_WORDS = 290
CONTEXT = 12
LAYERS = 3
LAYER = 2
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]


# ---------------------------------------------------------------------------------------------
# The tiny models, tokenizer and texts


def build_tokenizer(directory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + [f"w{i}" for i in range(VOCAB_WORDS)])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>",
        unk_token="<unk>", additional_special_tokens=["<|endoftext|>"])
    tokenizer.save_pretrained(directory)
    return len(vocab)


def build_model(directory, family, hidden):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    vocab = build_tokenizer(directory)
    torch.manual_seed(0)
    if family == "llama":
        config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                             num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=64, initializer_range=0.2, bos_token_id=1,
                             eos_token_id=2, tie_word_embeddings=False)
        model = LlamaForCausalLM(config)
    else:
        config = GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=LAYERS, n_head=4, n_positions=64,
                            initializer_range=0.2, bos_token_id=1, eos_token_id=2)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(directory)
    return directory


def write_texts(path, count=40):
    """Texts of random words; some hold a special token, so that exclusion matters mid-window."""
    rng = random.Random(7)
    lines = []
    for i in range(count):
        words = [f"w{rng.randrange(VOCAB_WORDS)}" for _ in range(rng.randrange(3, 15))]
        if i % 5 == 3:
            words.insert(len(words) // 2, "<|im_end|>")
        lines.append(json.dumps(" ".join(words)))
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------------------------
# SAEs written in each layout


def randn(*shape, scale=1.0, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def write_saelens(directory, architecture, tensors, **cfg):
    directory.mkdir(parents=True, exist_ok=True)
    d_sae, d_in = tensors["W_dec"].shape
    config = {"architecture": architecture, "d_in": d_in, "d_sae": d_sae, "dtype": "float32",
              "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
              "metadata": {"hook_name": f"blocks.{LAYER - 1}.hook_resid_post"}, **cfg}
    (directory / "cfg.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(directory / "sae_weights.safetensors"))
    return directory


def write_sparsify(directory, encoder_weight, encoder_bias, w_dec, b_dec, k):
    directory.mkdir(parents=True, exist_ok=True)
    n, d = w_dec.shape
    cfg = {"activation": "topk", "expansion_factor": n // d, "normalize_decoder": True, "num_latents": n,
           "k": k, "multi_topk": False, "skip_connection": False, "transcode": False, "d_in": d}
    (directory / "cfg.json").write_text(json.dumps(cfg))
    save_file({"encoder.weight": encoder_weight.contiguous(), "encoder.bias": encoder_bias,
               "W_dec": w_dec.contiguous(), "b_dec": b_dec}, str(directory / "sae.safetensors"))
    return directory


def random_topk(d, seed, n_mult=4):
    """Weights of a random TopK SAE: (W_enc [d, n], b_enc, W_dec unit rows [n, d], b_dec)."""
    n = n_mult * d
    w_dec = randn(n, d, seed=seed)
    w_dec = w_dec / w_dec.norm(dim=-1, keepdim=True)
    return w_dec.T * 0.8, randn(n, scale=0.1, seed=seed + 1), w_dec, randn(d, scale=0.3, seed=seed + 2)


def identity_sae(directory, d):
    """ReLU(x)·1 + ReLU(−x)·(−1) = x exactly: latents ±e_i, no biases."""
    eye = torch.eye(d)
    return write_saelens(directory, "standard", {
        "W_enc": torch.cat([eye, -eye], 1), "b_enc": torch.zeros(2 * d),
        "W_dec": torch.cat([eye, -eye], 0), "b_dec": torch.zeros(d)})


def zero_sae(directory, d):
    return write_saelens(directory, "standard", {
        "W_enc": randn(d, 2 * d, seed=3), "b_enc": torch.zeros(2 * d),
        "W_dec": torch.zeros(2 * d, d), "b_dec": torch.zeros(d)})


def jumprelu_sae(directory, d):
    w_enc, b_enc, w_dec, b_dec = random_topk(d, seed=11)
    return write_saelens(directory, "jumprelu", {
        "W_enc": w_enc, "b_enc": b_enc, "W_dec": w_dec * 1.3, "b_dec": b_dec,
        "threshold": randn(4 * d, seed=14).abs() * 0.3})


def saelens_topk_rescaled(directory, d):
    w_enc, b_enc, w_dec, b_dec = random_topk(d, seed=21)
    scales = torch.linspace(0.5, 2.0, w_dec.shape[0])[:, None]
    return write_saelens(directory, "topk", {"W_enc": w_enc, "b_enc": b_enc, "W_dec": w_dec * scales,
                                              "b_dec": b_dec}, k=5, rescale_acts_by_decoder_norm=True)


def sparsify_sae(directory, d, seed=31):
    w_enc, b_enc, w_dec, b_dec = random_topk(d, seed=seed)
    return write_sparsify(directory, w_enc.T, b_enc, w_dec, b_dec, k=6)


def run_directory(directory, d):
    """What `sae train` writes, as far as a loader looks: config.json and both exports."""
    w_enc, b_enc, w_dec, b_dec = random_topk(d, seed=41)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({
        "config": {"architecture": "topk", "k": 6, "transcoder": False, "tensor": "activations"},
        "d_in": d}))
    write_sparsify(directory / "sparsify", w_enc.T, b_enc, w_dec, b_dec, k=6)
    write_saelens(directory / "saelens", "topk", {"W_enc": w_enc, "b_enc": b_enc, "W_dec": w_dec,
                                                   "b_dec": b_dec}, k=6, metadata={"hook_name": "unknown"})
    return directory


# ---------------------------------------------------------------------------------------------
# The independent computation


def plain_reconstruction(directory):
    """x → x̂ for the SAEs written above, from the files, written out longhand."""
    if (directory / "config.json").is_file() and (directory / "sparsify").is_dir():
        directory = directory / "sparsify"
    if (directory / "sae.safetensors").is_file():
        w = load_file(str(directory / "sae.safetensors"))
        k = json.loads((directory / "cfg.json").read_text())["k"]

        def sparsify(x):
            pre = torch.relu((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"])
            values, indices = pre.topk(k, dim=-1)
            return (values[..., None] * w["W_dec"][indices]).sum(-2) + w["b_dec"]
        return sparsify
    cfg = json.loads((directory / "cfg.json").read_text())
    w = load_file(str(directory / "sae_weights.safetensors"))

    def saelens(x):
        pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
        if cfg["architecture"] == "jumprelu":
            f = torch.where(pre > w["threshold"], pre, torch.zeros_like(pre)).relu()
        elif cfg["architecture"] == "topk":
            norms = w["W_dec"].norm(dim=-1) if cfg.get("rescale_acts_by_decoder_norm") else torch.ones(pre.shape[-1])
            scaled = pre * norms
            keep = torch.zeros_like(scaled).scatter(-1, scaled.topk(cfg["k"], dim=-1).indices, 1.0)
            f = (scaled * keep).relu() / norms
        else:
            f = pre.relu()
        return f @ w["W_dec"] + w["b_dec"]
    return saelens


def plain_windows(tokenizer, texts_path):
    eot = tokenizer.get_vocab()["<|endoftext|>"]
    stream = []
    for i, line in enumerate(texts_path.read_text().splitlines()):
        stream += ([eot] if i else []) + tokenizer(json.loads(line), add_special_tokens=False)["input_ids"]
    body = CONTEXT - 1
    return [[eot] + stream[j * body:(j + 1) * body] for j in range(len(stream) // body)]


def next_module(model, layer):
    """The module whose input is block `layer`'s output: the next block, or the final norm."""
    if hasattr(model, "transformer"):
        blocks, final = model.transformer.h, model.transformer.ln_f
    else:
        blocks, final = model.model.layers, model.model.norm
    return blocks[layer] if layer < len(blocks) else final


def logits_with(model, tokens, layer, replace):
    """Logits [T, V] with `replace(x)` [T, d] substituted for block `layer`'s output."""
    def pre_hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        new = replace(hidden[0])[None]
        return ((new,) + tuple(args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": new})
    handle = next_module(model, layer).register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        return model(input_ids=torch.tensor([tokens]), use_cache=False).logits[0].double()
    finally:
        handle.remove()


def plain_figures(model, tokenizer, texts_path, layer, reconstruct, keep_bos):
    """CE and KL per token, averaged plainly over the tokens SAELens/SAEBench keep."""
    special = set(tokenizer.all_special_ids)
    sums = {name: 0.0 for name in ("ce_clean", "ce_sae", "ce_zero", "kl_sae", "kl_zero")}
    n_ce = n_kl = n_patched = 0
    for tokens in plain_windows(tokenizer, texts_path):
        # Spliced rows: all with --keep-bos-recon, else those of the shards (t > 0, not special).
        spliced = [keep_bos or (t > 0 and token not in special) for t, token in enumerate(tokens)]

        def sae_patch(x):
            return torch.stack([reconstruct(row) if s else row for row, s in zip(x, spliced)])

        def zero_patch(x):
            return torch.stack([torch.zeros_like(row) if s else row for row, s in zip(x, spliced)])
        with torch.no_grad():
            n_patched += sum(spliced)
            clean = torch.log_softmax(logits_with(model, tokens, layer, lambda x: x), -1)
            patched = {"sae": torch.log_softmax(logits_with(model, tokens, layer, sae_patch), -1),
                       "zero": torch.log_softmax(logits_with(model, tokens, layer, zero_patch), -1)}
        for t, token in enumerate(tokens):
            if t == 0 or token in special:
                continue
            n_kl += 1
            for mode, logp in patched.items():
                sums[f"kl_{mode}"] += float((clean[t].exp() * (clean[t] - logp[t])).sum())
            if t + 1 < len(tokens):
                n_ce += 1
                sums["ce_clean"] -= float(clean[t, tokens[t + 1]])
                for mode, logp in patched.items():
                    sums[f"ce_{mode}"] -= float(logp[t, tokens[t + 1]])
    out = {name: total / (n_kl if name.startswith("kl") else n_ce) for name, total in sums.items()}
    out["ce_loss_score"] = (out["ce_zero"] - out["ce_sae"]) / (out["ce_zero"] - out["ce_clean"])
    out["kl_div_score"] = (out["kl_zero"] - out["kl_sae"]) / out["kl_zero"]
    out["tokens"], out["tokens_kl"] = n_ce, n_kl
    out["patched_rows"] = n_patched
    return out


# ---------------------------------------------------------------------------------------------
# Running the script


def run_in_process(args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = dl.main([str(a) for a in args])
    assert code == 0, f"exit {code}: {err.getvalue()}"
    return json.loads(out.getvalue())


def run_cli(args):
    return subprocess.run([sys.executable, str(SCRIPTS / "downstream_loss.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def close(a, b, rel=1e-4, abs_=1e-6):
    return a is not None and b is not None and abs(a - b) <= abs_ + rel * abs(b)


def check_against_plain(name, result, plain):
    for key in ("ce_clean", "ce_sae", "ce_zero", "kl_sae", "kl_zero", "ce_loss_score", "kl_div_score"):
        assert close(result[key], plain[key], abs_=1e-5), f"{name}: {key} {result[key]} vs plain {plain[key]}"
    for key in ("tokens", "tokens_kl", "patched_rows"):
        assert result[key] == plain[key], f"{name}: {key} {result[key]} vs plain {plain[key]}"


# ---------------------------------------------------------------------------------------------
# The checks


class Setup:
    def __init__(self, root, family, hidden):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.root, self.family, self.hidden = root, family, hidden
        self.model_dir = build_model(root / f"model-{family}", family, hidden)
        self.texts = write_texts(root / "texts.jsonl")
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32).eval()

    def args(self, sae, *extra, layer=LAYER):
        return [sae, "--model", self.model_dir, "--layer", layer, "--texts", self.texts,
                "--context", CONTEXT, "--batch-size", 3, *extra]


def check_hook_point(s):
    """The pre-hook of the next module sees HF hidden_states[L] (so does the script's hook)."""
    seen = []
    tokens = plain_windows(s.tokenizer, s.texts)[0]
    logits_with(s.model, tokens, LAYER, lambda x: seen.append(x.clone()) or x)
    with torch.no_grad():
        states = s.model(input_ids=torch.tensor([tokens]), output_hidden_states=True).hidden_states
    assert torch.equal(seen[0], states[LAYER][0]), "the splice point is not hidden_states[L]"


def check_identity_and_zero(s):
    for extra in ([], ["--keep-bos-recon"]):
        r = run_in_process(s.args(identity_sae(s.root / "identity", s.hidden), *extra))
        assert r["ce_sae"] == r["ce_clean"], f"identity {extra}: {r['ce_sae']} != {r['ce_clean']}"
        assert abs(r["kl_sae"]) < 1e-9 and abs(r["ce_loss_score"] - 1) < 1e-9, r
        assert abs(r["kl_div_score"] - 1) < 1e-9 and r["fvu"] < 1e-10, r
        assert r["bos_recon"] == bool(extra), r
        r = run_in_process(s.args(zero_sae(s.root / "zero", s.hidden), *extra))
        assert r["ce_sae"] == r["ce_zero"] and abs(r["ce_loss_score"]) < 1e-9, r
        assert abs(r["kl_div_score"]) < 1e-9 and r["ce_zero"] != r["ce_clean"], r
    print(f"  {s.family}: identity SAE scores 1, zero SAE scores 0 (spliced at the shards' rows, and everywhere)")


def hookpoint_parent(s):
    """A sparsify save for two hookpoints: the one for --layer must be picked."""
    parent = s.root / "sparsify-run"
    sparsify_sae(parent / f"layers.{LAYER - 1}", s.hidden)
    sparsify_sae(parent / "layers.0", s.hidden, seed=77)
    return parent, parent / f"layers.{LAYER - 1}"


def check_layouts(s, layouts):
    for name, path, reference_dir in layouts:
        reconstruct = plain_reconstruction(reference_dir)
        figures = {}
        for keep_bos in (False, True):
            extra = ["--keep-bos-recon"] if keep_bos else []
            result = run_in_process(s.args(path, *extra))
            check_against_plain(f"{s.family} {name} bos={keep_bos}", result,
                                plain_figures(s.model, s.tokenizer, s.texts, LAYER, reconstruct, keep_bos))
            figures[keep_bos] = result
        assert figures[False]["ce_sae"] != figures[True]["ce_sae"], f"{name}: --keep-bos-recon made no difference"
        print(f"  {s.family} {name}: ce_loss_score {figures[False]['ce_loss_score']:.4f} "
              f"(spliced everywhere: {figures[True]['ce_loss_score']:.4f}) = the plain computation")


def check_saelens_fixtures():
    """Our torch forward against SAELens' own outputs, saved beside the fixtures."""
    rows = load_file(str(FIXTURES / "saelens" / "rows.safetensors"))["activations"]
    names = sorted(p.stem for p in (FIXTURES / "saelens" / "expected").glob("*.safetensors"))
    assert names, "no SAELens fixtures"
    for name in names:
        expected = load_file(str(FIXTURES / "saelens" / "expected" / f"{name}.safetensors"))
        sae = dl.load_sae(FIXTURES / "saelens" / name, layer=4)
        out, codes = sae(rows)
        scale = expected["sae_out"].abs().max()
        assert (out - expected["sae_out"]).abs().max() <= 1e-5 * scale, f"SAELens fixture {name}: sae_out differs"
        assert ((codes != 0) == (expected["feature_acts"] != 0)).all(), f"SAELens fixture {name}: codes differ"
    print(f"  SAELens fixtures: {len(names)} variants reconstruct as SAELens does")


def check_batchtopk_checkpoints(root, d):
    """A BatchTopK and a Matryoshka training checkpoint (cfg "batchtopk", `topk_threshold`, decoder
    norms rescaled) reconstruct as the JumpReLU SAE SAELens exports from them."""
    try:
        from sae_lens import (SAE, BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig,
                              MatryoshkaBatchTopKTrainingSAE, MatryoshkaBatchTopKTrainingSAEConfig)
    except ImportError:
        print("  sae-lens not installed: BatchTopK checkpoints not compared")
        return
    n = 4 * d
    saes = {"batchtopk": BatchTopKTrainingSAE(BatchTopKTrainingSAEConfig(d_in=d, d_sae=n, k=5)),
            "matryoshka": MatryoshkaBatchTopKTrainingSAE(MatryoshkaBatchTopKTrainingSAEConfig(
                d_in=d, d_sae=n, k=5, matryoshka_widths=[n // 4, n]))}
    x = randn(40, d, scale=2.0, seed=9)
    for name, sae in saes.items():
        with torch.no_grad():
            for i, param in enumerate(sae.parameters()):
                param.copy_(randn(*param.shape, scale=0.3, seed=100 + i))
            sae.W_dec.mul_(torch.linspace(0.5, 2.0, n)[:, None])
            sae.topk_threshold.fill_(0.4)
        sae.save_model(root / f"{name}-checkpoint")
        sae.save_inference_model(root / f"{name}-inference")
        exported = SAE.load_from_disk(str(root / f"{name}-inference"))
        with torch.no_grad():
            expected = exported.decode(exported.encode(x))
        for variant in ("checkpoint", "inference"):
            out, _ = dl.load_sae(root / f"{name}-{variant}", layer=LAYER)(x)
            assert torch.allclose(out, expected, rtol=1e-5, atol=1e-5), f"{name} {variant} differs from SAELens"
    print("  SAELens BatchTopK and Matryoshka checkpoints reconstruct as their JumpReLU exports")


def check_sparsify_library(root, d):
    try:
        from sparsify import SparseCoder
    except ImportError:
        print("  sparsify not installed: its own forward not compared")
        return
    directory = sparsify_sae(root / "sparsify-lib", d)
    coder = SparseCoder.load_from_disk(directory)
    x = randn(50, d, scale=2.0, seed=5)
    with torch.no_grad():
        expected = coder(x).sae_out
    out, _ = dl.load_sae(directory, layer=LAYER)(x)
    assert torch.allclose(out, expected, rtol=1e-5, atol=1e-5), "sparsify's forward differs"
    print("  sparsify: reconstructs as sparsify's SparseCoder does")


def check_errors(s):
    transcoders = FIXTURES / "transcoders"
    cases = [
        ("missing SAE", s.args(s.root / "nowhere")),
        ("sparsify transcoder", s.args(transcoders / "sparsify-transcoder")),
        ("SAELens transcoder", s.args(transcoders / "jumprelu_skip_transcoder")),
        ("layer 0", s.args(sparsify_sae(s.root / "err-sae", s.hidden), layer=0)),
        ("layer past the end", s.args(s.root / "err-sae", layer=LAYERS + 1)),
        ("width mismatch", s.args(FIXTURES / "saelens" / "standard")),
        ("missing --model", [s.root / "err-sae", "--layer", 1]),
        ("texts not JSON", s.args(s.root / "err-sae")[:5] + ["--texts", SCRIPTS / "downstream_loss.py",
                                                              "--context", CONTEXT]),
    ]
    for name, args in cases:
        done = run_cli(args)
        err = done.stderr.strip()
        assert done.returncode != 0, f"{name}: exit 0"
        assert err and "\n" not in err and "Traceback" not in err, f"{name}: stderr {done.stderr!r}"
        assert not done.stdout.strip(), f"{name}: printed {done.stdout!r}"
        print(f"  refused ({name}): {err}")


def check_cli(s):
    """The script as a command: one JSON object on stdout, exit 0."""
    done = run_cli(s.args(sparsify_sae(s.root / "cli-sae", s.hidden)))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for key in ("ce_clean", "ce_sae", "ce_zero", "ce_loss_score", "kl_div_score", "kl_sae", "kl_zero",
                "tokens", "windows", "layer", "hook", "sae_kind", "fvu", "bos_recon"):
        assert key in result, f"no {key} in {sorted(result)}"
    assert not math.isnan(result["ce_loss_score"])
    print(f"  command line: exit 0, one JSON object ({len(result)} fields)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, help="also check this `sae train` run directory")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    hidden = 32
    if args.run_dir:
        hidden = json.loads((args.run_dir / "sparsify" / "cfg.json").read_text())["d_in"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        check_saelens_fixtures()
        check_sparsify_library(root, hidden)
        check_batchtopk_checkpoints(root, hidden)
        for family in ("llama", "gpt2"):
            s = Setup(root / family, family, hidden)
            check_hook_point(s)
            check_identity_and_zero(s)
            parent, chosen = hookpoint_parent(s)
            layouts = [("sparsify", sparsify_sae(s.root / "sparsify", hidden), s.root / "sparsify"),
                       ("sparsify hookpoints", parent, chosen),
                       ("run directory", run_directory(s.root / "run", hidden), s.root / "run")]
            if family == "llama":
                layouts += [("SAELens jumprelu", jumprelu_sae(s.root / "jumprelu", hidden), s.root / "jumprelu"),
                            ("SAELens topk rescaled", saelens_topk_rescaled(s.root / "topk", hidden), s.root / "topk")]
            if args.run_dir:
                layouts.append(("real run directory", args.run_dir, args.run_dir))
            check_layouts(s, layouts)
            if family == "llama":
                check_cli(s)
                check_errors(s)
    print("all downstream_loss checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
