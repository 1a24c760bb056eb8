#!/usr/bin/env python3
"""Tests scripts/cache_components.py on tiny random models built here (nothing is downloaded).

    ~/.cache/sae-wgpu/pyloaders/bin/python scripts/test_cache_components.py

Checks, on a 3-block random Llama (d_model 32, 4 heads, d_ff 64) and the texts of
test_downstream_loss.py:
  * every tensor has its name, shape and dtype; hook_embed is the embedding of the token; the
    partial sums equal HF hidden_states[l+1] of an independent forward; Σ_h z_h·W_O^h (from
    writers.safetensors) equals attn_out; ln2.hook_normalized equals post_attention_layernorm of
    the mid-block residual, and the MLP of it gives mlp_out; tokens match window_tokens;
  * end-of-text rows are dropped (kept with --keep-sinks), and so are rows of a token whose
    embedding was made 1000× larger (massive norm), with a tied unembedding written as such;
  * small --rows-per-shard shards concatenate to the single-shard cache, in float16 by default;
  * refusals: --layer ≥ n_layers, GPT-2, a block whose output is shifted (the sum breaks: the
    block is named and the shards already written are removed), an o_proj whose output is
    shifted (the head sum breaks), bad flags; each one line on stderr, exit non-zero.
"""

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))
sys.dont_write_bytecode = True  # no scripts/__pycache__ left in the tree
import cache_components as cc  # noqa: E402
import downstream_loss as dl  # noqa: E402
import test_downstream_loss as tdl  # noqa: E402  (the tiny models, tokenizer and texts)

CONTEXT = tdl.CONTEXT
LAYER = 2
HIDDEN, HEADS = 32, 4
D_HEAD = HIDDEN // HEADS


# ---------------------------------------------------------------------------------------------
# Running the script


def run_in_process(args):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cc.main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def cached(args):
    code, out, err = run_in_process(args)
    assert code == 0, f"exit {code}: {err}"
    assert len(out.strip().splitlines()) == 1, f"stdout is not one line: {out!r}"
    return json.loads(out)


def run_cli(args):
    return subprocess.run([sys.executable, str(SCRIPTS / "cache_components.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def assert_refused(name, code, out, err, *expected):
    err = err.strip()
    assert code != 0, f"{name}: exit 0"
    assert err and "\n" not in err and "Traceback" not in err, f"{name}: stderr {err!r}"
    assert err.startswith("cache_components.py: "), f"{name}: stderr {err!r}"
    assert not out.strip(), f"{name}: printed {out!r}"
    for part in expected:
        assert part in err, f"{name}: {part!r} not in {err!r}"
    print(f"  refused ({name}): {err}")


def read_cache(directory):
    """{name: tensor} of every shard concatenated (window_tokens: the first shard's), and the shards."""
    paths = sorted(directory.glob("components_*.safetensors"))
    shards = [load_file(str(p)) for p in paths]
    joined = {name: torch.cat([s[name] for s in shards]) for name in shards[0] if name != "window_tokens"}
    joined["window_tokens"] = shards[0]["window_tokens"]
    return joined, shards, paths


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


# ---------------------------------------------------------------------------------------------
# The setup


class Setup:
    def __init__(self, root):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.root = root
        self.model_dir = tdl.build_model(root / "llama", "llama", HIDDEN)
        self.texts = tdl.write_texts(root / "texts.jsonl")
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=torch.float32).eval()
        self.eot = self.tokenizer.get_vocab()["<|endoftext|>"]
        self.windows = torch.tensor(tdl.plain_windows(self.tokenizer, self.texts))
        with torch.no_grad():
            self.hidden = self.model(input_ids=self.windows, output_hidden_states=True).hidden_states

    def args(self, out, *extra, model=None, layer=LAYER):
        return ["--model", model or self.model_dir, "--layer", layer, "--texts", self.texts,
                "--context", CONTEXT, "--out", self.root / out, "--batch-size", 3, *extra]

    def kept(self, keep_sinks=False):
        """(window, position) of the rows the cache should hold, in order."""
        mask = torch.ones_like(self.windows, dtype=torch.bool)
        mask[:, 0] = False
        if not keep_sinks:
            mask &= self.windows != self.eot
        return mask.nonzero(as_tuple=True)


# ---------------------------------------------------------------------------------------------
# 1. The full cache against an independent computation


def expected_shapes(rows, windows):
    shapes = {"hook_embed": [rows, HIDDEN], f"blocks.{LAYER - 1}.hook_resid_post": [rows, HIDDEN],
              "tokens": [rows], "window": [rows], "position": [rows], "window_tokens": [windows, CONTEXT]}
    for l in range(LAYER):
        shapes.update({f"blocks.{l}.hook_attn_out": [rows, HIDDEN],
                       f"blocks.{l}.hook_mlp_out": [rows, HIDDEN],
                       f"blocks.{l}.attn.hook_z": [rows, HEADS, D_HEAD],
                       f"blocks.{l}.ln2.hook_normalized": [rows, HIDDEN]})
    return shapes


def check_layout(s, c, summary):
    shapes = expected_shapes(len(c["tokens"]), len(s.windows))
    assert set(c) == set(shapes), f"tensors {sorted(c)} != {sorted(shapes)}"
    for name, shape in shapes.items():
        assert list(c[name].shape) == shape, f"{name}: {list(c[name].shape)} != {shape}"
        want = torch.int32 if name in ("tokens", "window", "position", "window_tokens") else torch.float32
        assert c[name].dtype == want, f"{name}: {c[name].dtype}"
    assert sorted(summary["components"]) == sorted(n for n, t in c.items() if t.is_floating_point())
    assert summary["rows"] == len(c["tokens"]) and summary["windows"] == len(s.windows), summary


def check_rows(s, c, summary):
    assert torch.equal(c["window_tokens"], s.windows.int()), "window_tokens differ from the plain windows"
    window, position = s.kept()
    assert torch.equal(c["window"].long(), window) and torch.equal(c["position"].long(), position), \
        "the cached rows are not every (window, position ≥ 1) whose token is not <|endoftext|>"
    assert torch.equal(c["tokens"], c["window_tokens"][c["window"].long(), c["position"].long()])
    eot_rows = int((s.windows[:, 1:] == s.eot).sum())
    assert eot_rows > 0 and summary["dropped_sinks"] == eot_rows, (eot_rows, summary["dropped_sinks"])


def check_sums(s, c, writers):
    window, position = c["window"].long(), c["position"].long()
    layers = s.model.model.layers
    embed = s.model.model.embed_tokens.weight[c["tokens"].long()]
    assert torch.equal(c["hook_embed"], embed), "hook_embed is not the token's embedding"
    partial = c["hook_embed"].double()
    worst = 0.0
    for l in range(LAYER):
        attn, mlp = c[f"blocks.{l}.hook_attn_out"], c[f"blocks.{l}.hook_mlp_out"]
        with torch.no_grad():
            normed = layers[l].post_attention_layernorm((partial + attn.double()).float())
            assert rel(c[f"blocks.{l}.ln2.hook_normalized"], normed) < 1e-5, f"block {l}: ln2 differs"
            assert rel(mlp, layers[l].mlp(c[f"blocks.{l}.ln2.hook_normalized"])) < 1e-5, f"block {l}: mlp_out"
        w_o = writers[f"model.layers.{l}.self_attn.o_proj.weight"].double().view(HIDDEN, HEADS, D_HEAD)
        z = c[f"blocks.{l}.attn.hook_z"].double()
        per_head = sum(z[:, h] @ w_o[:, h].T for h in range(HEADS))
        assert rel(per_head, attn) < 1e-5, f"block {l}: Σ_h z_h·W_O^h != attn_out ({rel(per_head, attn)})"
        partial = partial + attn.double() + mlp.double()
        hf = s.hidden[l + 1][window, position]
        worst = max(worst, rel(partial, hf))
        assert rel(partial, hf) < 1e-5, f"block {l}: partial sum vs hidden_states[{l + 1}]: {worst}"
    resid = c[f"blocks.{LAYER - 1}.hook_resid_post"]
    assert rel(resid, s.hidden[LAYER][window, position]) < 1e-5, "resid is not HF hidden_states[L]"
    assert rel(partial, resid) < 1e-5, "embed + Σ(attn + mlp) != resid"
    return worst


def check_writers(s, out, tied):
    writers = load_file(str(out / "writers.safetensors"))
    unembed = "model.embed_tokens.weight" if tied else "lm_head.weight"
    names = {unembed, "model.norm.weight"} | {f"model.layers.{l}.{p}.weight" for l in range(LAYER)
                                               for p in ("self_attn.o_proj", "mlp.down_proj")}
    assert set(writers) == names, f"writers {sorted(writers)} != {sorted(names)}"
    assert writers[unembed].dtype == torch.float16 and writers["model.norm.weight"].dtype == torch.float32
    config = json.loads((out / "config.json").read_text())
    for key, value in (("hidden_size", HIDDEN), ("num_attention_heads", HEADS), ("head_dim", D_HEAD),
                       ("intermediate_size", 2 * HIDDEN), ("num_hidden_layers", tdl.LAYERS),
                       ("vocab_size", len(s.tokenizer))):
        assert config.get(key) == value, f"config.json {key}: {config.get(key)} != {value}"
    return writers


def check_full(s):
    done = run_cli(s.args("full", "--heads", "--mlp-in", "0,1", "--dtype", "float32"))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    c, shards, paths = read_cache(s.root / "full")
    assert len(paths) == 1 and summary["shards"] == [str(paths[0])], summary["shards"]
    check_layout(s, c, summary)
    check_rows(s, c, summary)
    writers = check_writers(s, s.root / "full", tied=False)
    worst = check_sums(s, c, writers)
    assert 0 < summary["max_rel_error"] < 1e-5 and summary["max_rel_error_heads"] < 1e-5, summary
    with safe_open(str(paths[0]), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "sae-wgpu component cache v1" and meta["layer"] == str(LAYER), meta
    assert (meta["n_heads"], meta["d_head"], meta["dtype"]) == (str(HEADS), str(D_HEAD), "float32"), meta
    assert json.loads(meta["hooks"]) == summary["components"], meta
    print(f"  {summary['rows']} rows of {summary['windows']} windows: every tensor as expected; "
          f"partial sums = HF hidden states (worst {worst:.1e}), heads, ln2 and mlp_out recomputed")
    return c


# ---------------------------------------------------------------------------------------------
# 2. Sinks


def planted_model(s, token):
    """The same Llama with a tied unembedding and token's embedding 1000× larger: massive rows."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(s.model_dir, dtype=torch.float32)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    with torch.no_grad():
        model.model.embed_tokens.weight[token] *= 1000.0
    directory = s.root / "planted"
    model.save_pretrained(directory)
    s.tokenizer.save_pretrained(directory)
    return directory


def check_sinks(s):
    summary = cached(s.args("sinks", "--keep-sinks", "--dtype", "float32"))
    c, _, _ = read_cache(s.root / "sinks")
    assert summary["rows"] == len(s.windows) * (CONTEXT - 1) == len(c["tokens"]), summary
    assert summary["dropped_sinks"] == 0 and (c["tokens"] == s.eot).any(), "--keep-sinks dropped rows"
    counts = torch.bincount(s.windows[:, 1:].flatten())
    token = int(((counts >= 2) & (counts <= 4)).nonzero()[0])
    directory = planted_model(s, token)
    dropped = cached(s.args("planted", model=directory))
    c, _, _ = read_cache(s.root / "planted")
    assert not (c["tokens"] == token).any() and not (c["tokens"] == s.eot).any(), "sink rows kept"
    expected = int((s.windows[:, 1:] == s.eot).sum()) + int(counts[token])
    assert dropped["dropped_sinks"] == expected, (dropped["dropped_sinks"], expected)
    check_writers(s, s.root / "planted", tied=True)
    kept = cached(s.args("planted-kept", "--keep-sinks", model=directory))
    c, _, _ = read_cache(s.root / "planted-kept")
    assert int((c["tokens"] == token).sum()) == int(counts[token]), "--keep-sinks dropped the massive rows"
    print(f"  sinks: {summary['rows']} rows with --keep-sinks; <|endoftext|> rows and {int(counts[token])} "
          f"massive rows (token {token}, embedding ×1000) dropped otherwise "
          f"({kept['rows']} → {dropped['rows']})")


# ---------------------------------------------------------------------------------------------
# 3. Several shards


def check_sharding(s, single):
    summary = cached(s.args("sharded", "--heads", "--mlp-in", "0,1", "--rows-per-shard", 50))
    c, shards, paths = read_cache(s.root / "sharded")
    assert len(paths) == len(summary["shards"]) == -(-len(single["tokens"]) // 50), len(paths)
    assert all(len(shard["tokens"]) <= 50 for shard in shards)
    assert all(torch.equal(shard["window_tokens"], single["window_tokens"]) for shard in shards)
    for name, tensor in single.items():
        want = tensor.half() if tensor.is_floating_point() else tensor
        assert c[name].dtype == want.dtype and torch.equal(c[name], want), \
            f"{name}: shards differ from the single shard"
    print(f"  {len(paths)} shards of ≤ 50 rows concatenate to the single shard (float16 by default)")


# ---------------------------------------------------------------------------------------------
# 4. Refusals


@contextlib.contextmanager
def patched_model(change):
    """downstream_loss.load_model, whose model `change` alters, for the next in-process run."""
    original = dl.load_model

    def load(name, device):
        tokenizer, model = original(name, device)
        change(model)
        return tokenizer, model
    dl.load_model = load
    try:
        yield
    finally:
        dl.load_model = original


def shift_block(model, block=1, after_calls=4):
    """Block `block`'s output shifted by a constant from its `after_calls`-th call on."""
    layer, calls = model.model.layers[block], [0]
    forward = layer.forward

    def shifted(*args, **kwargs):
        calls[0] += 1
        out = forward(*args, **kwargs)
        return out + 0.25 if calls[0] > after_calls else out
    layer.forward = shifted


def shift_o_proj(model):
    model.model.layers[0].self_attn.o_proj.register_forward_hook(lambda m, a, out: out + 0.25)


def check_broken_models(s):
    out = s.root / "broken"
    with patched_model(shift_block):
        code, stdout, err = run_in_process(s.args("broken", "--rows-per-shard", 30))
    assert_refused("block 1 shifted", code, stdout, err, "at block 1", "hidden_states[2]")
    shard = int(err.split("shard ")[1].split(":")[0])
    assert shard > 0, f"the failure came in the first shard, so no removal was tested: {err}"
    assert not list(out.iterdir()), f"left in --out: {sorted(p.name for p in out.iterdir())}"
    with patched_model(shift_o_proj):
        code, stdout, err = run_in_process(s.args("broken-heads", "--heads"))
    assert_refused("o_proj shifted", code, stdout, err, "W_O", "at block 0")
    assert not list((s.root / "broken-heads").iterdir())


def check_refusals(s):
    done = run_cli(s.args("too-deep", layer=tdl.LAYERS))
    assert_refused("--layer = n_layers", done.returncode, done.stdout, done.stderr, "--layer 3")
    gpt2 = tdl.build_model(s.root / "gpt2", "gpt2", HIDDEN)
    done = run_cli(s.args("gpt2", model=gpt2))
    assert_refused("GPT-2", done.returncode, done.stdout, done.stderr, "model type gpt2 is not supported")
    check_broken_models(s)
    cases = [("--layer 0", s.args("e0", layer=0)),
             ("--dtype bfloat16", s.args("e1", "--dtype", "bfloat16")),
             ("--mlp-in past --layer", s.args("e2", "--mlp-in", "0,2")),
             ("--rows-per-shard 0", s.args("e3", "--rows-per-shard", 0)),
             ("missing texts", s.args("e4")[:4] + ["--texts", s.root / "nowhere.jsonl", "--context", CONTEXT,
                                                   "--out", s.root / "e4"]),
             ("an existing cache", s.args("full"))]
    for name, args in cases:
        assert_refused(name, *run_in_process(args))


def main():
    import transformers

    transformers.logging.disable_progress_bar()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        s = Setup(Path(tmp))
        single = check_full(s)
        check_sinks(s)
        check_sharding(s, single)
        check_refusals(s)
    print("all cache_components checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
