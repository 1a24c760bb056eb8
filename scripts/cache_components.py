#!/usr/bin/env python3
"""Cache the components that write the residual stream, for direct attribution of SAE features.

    cache_components.py --model M --layer L --texts FILE --context N --out DIR
        [--heads] [--mlp-in BLOCKS] [--keep-sinks] [--dtype float16|float32]
        [--rows-per-shard R] [--max-windows W] [--batch-size B] [--device cpu|cuda]

For a pre-norm decoder with rotary or no positions (Llama, Mistral, Qwen2, SmolLM2) the residual
stream after block L is exactly

    blocks.{L-1}.hook_resid_post = hook_embed + Σ_{l<L} (blocks.{l}.hook_attn_out + blocks.{l}.hook_mlp_out)

(TransformerLens names; HF: hidden_states[0], the outputs of layers[l].self_attn and
layers[l].mlp, hidden_states[L]). This script runs the model in float32 on the windows the
shared shards use (texts joined with <|endoftext|>, cut into N−1 tokens, each window prefixed
with <|endoftext|>, position 0 dropped) and writes those rows to DIR/components_NNNN.safetensors:
hook_embed, every block's attn_out and mlp_out, the residual; with --heads every block's
attn.hook_z [rows, n_heads, d_head] (the input of o_proj); with --mlp-in the listed blocks'
ln2.hook_normalized (the output of post_attention_layernorm, what the MLP reads); tokens,
window, position [rows] int32 and window_tokens [windows, N] int32 (all windows, in every shard).

Unless --keep-sinks, rows whose token is <|endoftext|> and rows whose residual norm exceeds 10×
the shard's median are dropped (the attention sinks the shared shards leave out).

Every shard is checked in float32 before it is written: the components must sum to the residual
(relative error ≤ 1e-4) and, with --heads, Σ_h z_h·W_O^h must equal each attn_out. Otherwise the
script names the first block where the sum departs from HF's hidden states, removes what it wrote
and exits non-zero. DIR/writers.safetensors holds the weights that turn components into terms
(o_proj and down_proj of blocks < L and the final norm in float32; the unembedding in float16)
and DIR/config.json the model's config. One JSON summary line goes to stdout.

Bad input: one line on stderr, exit status 2.
"""

import json
import os
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # importing downstream_loss must not leave scripts/__pycache__
sys.path.insert(0, str(Path(__file__).resolve().parent))

import downstream_loss as dl  # noqa: E402  (sets the transformers/tqdm environment first)
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

PROG = "cache_components.py"
FORMAT = "sae-wgpu component cache v1"
TOLERANCE = 1e-4
MASSIVE = 10.0  # a row over this many times the shard's median residual norm is an attention sink
Refusal = dl.Refusal
DTYPES = {"float16": torch.float16, "float32": torch.float32}
SUPPORTED = ("component caches need a pre-norm decoder with rotary/no positions "
             "(Llama, Mistral, Qwen2, SmolLM2)")


# ---------------------------------------------------------------------------------------------
# Command line


def parse_blocks(text, layer):
    """--mlp-in "0,3": sorted distinct block indices, each below --layer."""
    try:
        blocks = sorted({int(part) for part in text.split(",")})
    except ValueError:
        raise Refusal(f"--mlp-in {text}: expected a comma-separated list of block indices")
    bad = [b for b in blocks if not 0 <= b < layer]
    if bad:
        raise Refusal(f"--mlp-in {text}: block {bad[0]} is not in 0..{layer - 1} "
                      f"(blocks below --layer {layer})")
    return blocks


def parse_args(argv):
    parser = dl.Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    dl.add_window_args(parser, "the residual stream after block L (HF hidden_states[L])")
    parser.add_argument("--out", required=True, help="directory for the shards")
    parser.add_argument("--heads", action="store_true", help="also cache attn.hook_z of every block")
    parser.add_argument("--mlp-in", help="comma list of blocks whose ln2.hook_normalized to cache")
    parser.add_argument("--keep-sinks", action="store_true",
                        help="keep <|endoftext|> rows and rows of massive norm")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float16")
    parser.add_argument("--rows-per-shard", type=int, default=65536)
    args = parser.parse_args(argv)
    dl.check_window_args(args)
    if args.layer < 1:
        raise Refusal(f"--layer {args.layer}: must be at least 1 (the output of block 1)")
    if args.rows_per_shard < 1:
        raise Refusal(f"--rows-per-shard {args.rows_per_shard}: must be positive")
    args.mlp_in = parse_blocks(args.mlp_in, args.layer) if args.mlp_in is not None else []
    return args


def prepare_out(path):
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise Refusal(f"{path}: exists and is not a directory")
    # Overwriting an older cache in place could leave its extra shards beside ours.
    if out.is_dir() and any(out.glob("components_*.safetensors")):
        raise Refusal(f"{path}: already holds a component cache; pass an empty or new --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise Refusal(f"{path}: cannot create ({e.strerror})")
    return out


# ---------------------------------------------------------------------------------------------
# The model


def decoder_of(model):
    """(base model, its blocks) for a pre-norm rotary decoder; anything else is refused."""
    kind = getattr(model.config, "model_type", type(model).__name__)
    refusal = Refusal(f"model type {kind} is not supported: {SUPPORTED}")
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not hasattr(inner, "embed_tokens"):
        raise refusal
    parts = ("self_attn", "mlp", "post_attention_layernorm")
    if not all(all(hasattr(block, p) for p in parts) and hasattr(block.self_attn, "o_proj")
               for block in layers):
        raise refusal
    # A learnt position table adds a term the decomposition would not hold.
    embeddings = [n for n, m in inner.named_children()
                  if isinstance(m, torch.nn.Embedding) and n != "embed_tokens"]
    if embeddings or any(hasattr(inner, n) for n in ("embed_positions", "wpe")):
        raise refusal
    if not all(hasattr(block.mlp, "down_proj") for block in layers) or not hasattr(inner, "norm"):
        raise Refusal(f"model type {kind}: blocks without mlp.down_proj or no final norm; "
                      "writers.safetensors needs them")
    return inner, layers


def shape_of(model, layers, layer):
    """(n_heads, d_head, d_model) after checking --layer against the depth."""
    depth = len(layers)
    if not 1 <= layer < depth:
        raise Refusal(f"--layer {layer}: must be in 1..{depth - 1} (hidden_states[{depth}] of this "
                      f"{depth}-block model is after the final norm)")
    config = model.config.get_text_config()
    n_heads = config.num_attention_heads
    o_proj = layers[0].self_attn.o_proj
    if o_proj.in_features % n_heads:
        raise Refusal(f"o_proj reads {o_proj.in_features} values, not a multiple of {n_heads} heads")
    return n_heads, o_proj.in_features // n_heads, o_proj.out_features


class Stop(Exception):
    """Raised after block L−1: the blocks above it are not needed."""


class Capture:
    """Forward hooks that keep, per forward pass, each component the cache holds [B, N, ...]."""

    def __init__(self, layers, layer, heads, mlp_in):
        self.seen, self.handles = {}, []
        self.before(layers[0], "hook_embed")  # hidden_states[0]: what enters block 0
        for l in range(layer):
            block = layers[l]
            self.after(block.self_attn, f"blocks.{l}.hook_attn_out")
            self.after(block.mlp, f"blocks.{l}.hook_mlp_out")
            self.after(block, f"blocks.{l}.hook_resid_post")  # hidden_states[l+1], to localise
            if heads:
                self.before(block.self_attn.o_proj, f"blocks.{l}.attn.hook_z")
            if l in mlp_in:
                self.after(block.post_attention_layernorm, f"blocks.{l}.ln2.hook_normalized")
        self.handles.append(layers[layer - 1].register_forward_hook(self.stop))

    def before(self, module, name):
        def hook(_, args, kwargs):
            self.seen[name] = args[0] if args else next(iter(kwargs.values()))
        self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def after(self, module, name):
        def hook(_, args, output):
            self.seen[name] = output[0] if isinstance(output, tuple) else output
        self.handles.append(module.register_forward_hook(hook))

    @staticmethod
    def stop(*_):
        raise Stop

    def run(self, inner, batch):
        self.seen = {}
        try:
            inner(input_ids=batch, use_cache=False)
        except Stop:
            pass
        return self.seen

    def remove(self):
        for handle in self.handles:
            handle.remove()


# ---------------------------------------------------------------------------------------------
# Rows and checks


class Spec:
    """What this run caches, and the weights its checks need."""

    def __init__(self, args, layers, n_heads, d_head):
        self.layer, self.heads, self.mlp_in = args.layer, args.heads, args.mlp_in
        self.n_heads, self.d_head = n_heads, d_head
        self.o_proj = [layers[l].self_attn.o_proj for l in range(args.layer)]
        last = args.layer - 1
        self.resid = f"blocks.{last}.hook_resid_post"
        blocks = range(args.layer)
        self.components = (["hook_embed"]
                           + [f"blocks.{l}.hook_{part}_out" for l in blocks for part in ("attn", "mlp")]
                           + [self.resid]
                           + ([f"blocks.{l}.attn.hook_z" for l in blocks] if args.heads else [])
                           + [f"blocks.{l}.ln2.hook_normalized" for l in args.mlp_in])


def sq(x):
    return x.pow(2).sum(-1)


def sum_errors(seen, spec, flat):
    """Per row and block l: ‖embed + Σ_{l'≤l}(attn + mlp) − hidden_states[l+1]‖² and
    ‖hidden_states[l+1]‖², in float64, so that a shard's relative error (and the block where it
    starts) is a ratio of sums over its rows."""
    partial = flat(seen["hook_embed"]).double()
    err, ref = [], []
    for l in range(spec.layer):
        partial = partial + flat(seen[f"blocks.{l}.hook_attn_out"]).double() \
            + flat(seen[f"blocks.{l}.hook_mlp_out"]).double()
        target = flat(seen[f"blocks.{l}.hook_resid_post"]).double()
        err.append(sq(partial - target))
        ref.append(sq(target))
    return torch.stack(err, 1), torch.stack(ref, 1)


def head_errors(rows, spec):
    """Per row and block: ‖Σ_h z_h·W_O^h + b − attn_out‖² and ‖attn_out‖², in float64."""
    err, ref = [], []
    for l, o_proj in enumerate(spec.o_proj):
        w = o_proj.weight.detach().double().cpu().view(-1, spec.n_heads, spec.d_head)
        z = rows[f"blocks.{l}.attn.hook_z"].double()
        summed = torch.einsum("rhk,dhk->rd", z, w)
        if o_proj.bias is not None:
            summed = summed + o_proj.bias.detach().double().cpu()
        attn = rows[f"blocks.{l}.hook_attn_out"].double()
        err.append(sq(summed - attn))
        ref.append(sq(attn))
    return torch.stack(err, 1), torch.stack(ref, 1)


def batch_rows(seen, batch, first_window, spec):
    """The rows of one batch (position 0 dropped) as float32 CPU tensors, with the checks' sums."""
    b, n = batch.shape

    def flat(t):
        return t[:, 1:].reshape(b * (n - 1), *t.shape[2:]).float().cpu()

    rows = {name: flat(seen[name]) for name in spec.components}
    for l in range(spec.layer if spec.heads else 0):
        name = f"blocks.{l}.attn.hook_z"
        rows[name] = rows[name].reshape(-1, spec.n_heads, spec.d_head)
    rows["_err"], rows["_ref"] = sum_errors(seen, spec, flat)
    if spec.heads:
        rows["_herr"], rows["_href"] = head_errors(rows, spec)
    rows["tokens"] = flat(batch.cpu()).int()
    windows = torch.arange(first_window, first_window + b, dtype=torch.int32)
    rows["window"] = windows[:, None].expand(b, n - 1).reshape(-1)
    rows["position"] = torch.arange(1, n, dtype=torch.int32)[None].expand(b, n - 1).reshape(-1)
    return rows


def select(rows, keep):
    return {name: t[keep] for name, t in rows.items()}


def relative(err, ref):
    """Per block: sqrt(Σ err / Σ ref) over the rows."""
    return (err.sum(0) / ref.sum(0).clamp(min=1e-300)).sqrt()


def verify(rows, spec, index):
    """(residual-sum error, head-sum error or None) of a shard; a Refusal naming the block if off."""
    departs = relative(rows["_err"], rows["_ref"])
    total = departs[-1].item()
    if not total <= TOLERANCE:  # also catches NaN
        first = next(l for l, e in enumerate(departs.tolist()) if not e <= TOLERANCE)
        raise Refusal(f"shard {index}: hook_embed + Σ attn_out + mlp_out misses {spec.resid} by "
                      f"{total:.2e} relative (> {TOLERANCE:g}); the partial sum first departs from HF "
                      f"hidden_states[{first + 1}] at block {first} (extra norms or a parallel block?); "
                      "nothing written")
    if not spec.heads:
        return total, None
    heads = relative(rows["_herr"], rows["_href"])
    worst = heads.max().item()
    if not worst <= TOLERANCE:
        block = next(l for l, e in enumerate(heads.tolist()) if not e <= TOLERANCE)
        raise Refusal(f"shard {index}: Σ_h z_h·W_O^h differs from blocks.{block}.hook_attn_out by "
                      f"{heads[block].item():.2e} relative (> {TOLERANCE:g}) at block {block}; "
                      "nothing written")
    return total, worst


# ---------------------------------------------------------------------------------------------
# Shards


def save_atomic(tensors, path, metadata=None):
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class Shards:
    """Rows gathered until a shard is full, then filtered, checked and written."""

    def __init__(self, args, spec, out, window_tokens, start_id):
        self.args, self.spec, self.out = args, spec, out
        self.window_tokens = window_tokens.to(torch.int32).contiguous()
        self.start_id = start_id
        self.pending, self.count = [], 0
        self.written, self.rows, self.dropped = [], 0, 0
        self.max_error, self.max_head_error = 0.0, None

    def add(self, rows):
        if not self.args.keep_sinks:
            keep = rows["tokens"] != self.start_id
            self.dropped += int((~keep).sum())
            rows = select(rows, keep)
        self.pending.append(rows)
        self.count += len(rows["tokens"])
        while self.count >= self.args.rows_per_shard:
            self.flush(self.args.rows_per_shard)

    def finish(self):
        if self.count:
            self.flush(self.count)

    def flush(self, n):
        joined = {name: torch.cat([p[name] for p in self.pending]) for name in self.pending[0]}
        rest = {name: t[n:] for name, t in joined.items()}
        self.pending, self.count = [rest], self.count - n
        shard = {name: t[:n] for name, t in joined.items()}
        if not self.args.keep_sinks:
            norms = shard[self.spec.resid].norm(dim=-1)
            keep = norms <= MASSIVE * norms.median()
            self.dropped += int((~keep).sum())
            shard = select(shard, keep)
        error, head_error = verify(shard, self.spec, len(self.written))
        self.max_error = max(self.max_error, error)
        if head_error is not None:
            self.max_head_error = max(self.max_head_error or 0.0, head_error)
        self.write(shard)

    def tensors(self, shard):
        dtype = DTYPES[self.args.dtype]
        out = {}
        for name in self.spec.components:
            cast = shard[name].to(dtype).contiguous()
            if not torch.isfinite(cast).all() and torch.isfinite(shard[name]).all():
                raise Refusal(f"{name}: values beyond {self.args.dtype}'s range; use --dtype float32")
            out[name] = cast
        for name in ("tokens", "window", "position"):
            out[name] = shard[name].to(torch.int32).contiguous()
        out["window_tokens"] = self.window_tokens
        return out

    def metadata(self, index, rows):
        a, s = self.args, self.spec
        return {"format": FORMAT, "model": str(a.model), "layer": str(a.layer),
                "context": str(a.context), "dtype": a.dtype, "hooks": json.dumps(s.components),
                "n_heads": str(s.n_heads), "d_head": str(s.d_head), "shard": str(index),
                "rows": str(rows), "windows": str(len(self.window_tokens)),
                "keep_sinks": json.dumps(a.keep_sinks), "start_token": str(self.start_id)}

    def write(self, shard):
        index, rows = len(self.written), len(shard["tokens"])
        path = self.out / f"components_{index:04d}.safetensors"
        save_atomic(self.tensors(shard), path, self.metadata(index, rows))
        self.written.append(path)
        self.rows += rows

    def remove(self):
        for path in self.written:
            path.unlink(missing_ok=True)
        self.written = []


# ---------------------------------------------------------------------------------------------
# Writers and config


def writer_tensors(model, inner, layers, layer):
    """HF-named weights that turn cached components into terms: float32, the unembedding float16."""
    out = {}
    for l in range(layer):
        prefix = f"model.layers.{l}"
        for name, linear in (("self_attn.o_proj", layers[l].self_attn.o_proj),
                             ("mlp.down_proj", layers[l].mlp.down_proj)):
            out[f"{prefix}.{name}.weight"] = linear.weight
            if getattr(linear, "bias", None) is not None:
                out[f"{prefix}.{name}.bias"] = linear.bias
    out["model.norm.weight"] = inner.norm.weight
    out = {name: t.detach().float().cpu().clone().contiguous() for name, t in out.items()}
    lm_head = getattr(model, "lm_head", None)
    tied = lm_head is None or lm_head.weight.data_ptr() == inner.embed_tokens.weight.data_ptr()
    name, unembed = (("model.embed_tokens.weight", inner.embed_tokens.weight) if tied
                     else ("lm_head.weight", lm_head.weight))
    out[name] = unembed.detach().to(torch.float16).cpu().clone().contiguous()
    return out


def model_config(model, layers, n_heads, d_head):
    config = model.config.get_text_config().to_dict()
    filled = {"head_dim": d_head, "num_attention_heads": n_heads, "num_hidden_layers": len(layers),
              "hidden_size": layers[0].self_attn.o_proj.out_features,
              "intermediate_size": layers[0].mlp.down_proj.in_features,
              "vocab_size": model.get_input_embeddings().num_embeddings}
    for key, value in filled.items():
        if config.get(key) is None:
            config[key] = value
    return config


def write_json_atomic(value, path):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=str) + "\n")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# The run


@torch.inference_mode()
def cache(inner, layers, spec, windows, shards, args):
    capture = Capture(layers, args.layer, args.heads, args.mlp_in)
    try:
        for first in range(0, len(windows), args.batch_size):
            batch = windows[first:first + args.batch_size].to(args.device)
            shards.add(batch_rows(capture.run(inner, batch), batch, first, spec))
        shards.finish()
    finally:
        capture.remove()


def run(argv):
    args = parse_args(argv)
    if not Path(args.texts).is_file():
        raise Refusal(f"{args.texts}: no such file")
    out = prepare_out(args.out)
    tokenizer, model = dl.load_model(args.model, args.device)
    inner, layers = decoder_of(model)
    n_heads, d_head, _ = shape_of(model, layers, args.layer)
    start_id = dl.end_of_text_id(tokenizer)
    windows = dl.make_windows(dl.read_texts(args.texts), tokenizer, start_id, args.context, args.max_windows)
    if not len(windows):
        raise Refusal(f"{args.texts}: the texts make no window of {args.context} tokens")
    spec = Spec(args, layers, n_heads, d_head)
    shards = Shards(args, spec, out, windows, start_id)
    try:
        cache(inner, layers, spec, windows, shards, args)
        if not shards.written:
            raise Refusal("no row left to cache (every row was an end-of-text token)")
        save_atomic(writer_tensors(model, inner, layers, args.layer), out / "writers.safetensors")
        write_json_atomic(model_config(model, layers, n_heads, d_head), out / "config.json")
    except BaseException:
        shards.remove()  # a cache that failed a check must not look like a finished one
        raise
    return {"shards": [str(p) for p in shards.written], "rows": shards.rows, "windows": len(windows),
            "dropped_sinks": shards.dropped, "max_rel_error": shards.max_error,
            "max_rel_error_heads": shards.max_head_error, "components": spec.components,
            "layer": args.layer, "context": args.context, "dtype": args.dtype,
            "writers": str(out / "writers.safetensors")}


def main(argv=None):
    return dl.run_main(run, PROG, argv)


if __name__ == "__main__":
    sys.exit(main())
