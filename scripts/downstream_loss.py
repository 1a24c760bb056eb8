#!/usr/bin/env python3
"""Downstream loss with an SAE spliced into a language model: the metric papers quote.

    downstream_loss.py SAE --model M --layer L --texts FILE --context N
        [--batch-size B] [--max-windows W] [--device cpu|cuda] [--keep-bos-recon]

Prints one JSON object. Definitions are SAELens' `evals.get_recons_loss` and SAEBench `core`:
three forward passes per batch of windows (clean; the residual stream after block L replaced by
the SAE's reconstruction; the same positions zero-ablated), per-token next-token cross-entropy
and KL(clean ‖ patched) summed over the vocabulary, averaged over the scored tokens, and

    ce_loss_score = (CE_zero − CE_sae) / (CE_zero − CE_clean)
    kl_div_score  = (KL_zero − KL_sae) / KL_zero

Scored tokens: every position whose input token is not special (tokenizer.all_special_ids:
BOS, EOS, pad, …) and not position 0; the CE at position t is the loss of predicting token t+1
(so a window of N tokens has N−1 CE terms and N KL terms), as in SAELens and SAEBench.

--layer L: the output of block L (1-based) = HF `hidden_states[L]` (for L below the model's
depth) = TransformerLens `blocks.{L-1}.hook_resid_post`; spliced with a forward hook on
`model.model.layers[L-1]` (Llama family) or `transformer.h[L-1]` (GPT-2).

Windows are made as the shared activation shards were: the texts (one JSON string per line)
are tokenized without special tokens, joined with the end-of-text token, and cut into pieces of
N−1 tokens; each window is that token followed by one piece (a last partial piece is dropped).

Where the SAE is spliced: by default at the scored positions only, i.e. neither at position 0
(the window's first token, an attention sink) nor at special tokens (the end-of-text tokens that
join texts, also attention sinks at depth: their norms are ~100× a typical row's). The shared
shards drop exactly those rows, so an SAE trained on them never saw such a row. This is SAELens'
`get_recons_loss` with ignore_tokens (it splices only at non-special tokens). --keep-bos-recon
splices at every position, SAEBench `core`'s default. In both modes the zero-ablation covers the
same positions as the reconstruction (SAELens zero-ablates every position; SAEBench, like
--keep-bos-recon, every position too), so that the score compares the SAE with removing the same
information. The JSON says which (`bos_recon`, `patched_rows`).

SAE: a sparsify directory (cfg.json + sae.safetensors, or a parent holding hookpoint
subdirectories), a SAELens directory (cfg.json + sae_weights.safetensors: standard, topk,
jumprelu, gated, batchtopk and matryoshka_batchtopk as JumpReLU with their threshold; run-time
normalisations and a training checkpoint's activation_scaler.json applied around the SAE), or
a `sae train` run directory (its sparsify/ export, else its saelens/ one). Transcoders are
refused: this metric is for an SAE that reconstructs the activation it reads.

Bad input: one line on stderr, exit status 2.
"""

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")
os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF dequantization bar ignores its own switch

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

PROG = "downstream_loss"


class Refusal(Exception):
    """Bad input: reported in one line, never with a traceback."""


NOT_AN_SAE = "this metric splices an SAE that reconstructs the activation it reads"


# ---------------------------------------------------------------------------------------------
# SAEs


@dataclass
class Scaler:
    """SAELens' ActivationScaler beside a training checkpoint: x·s, then (x − mean)·M."""

    factor: Optional[float] = None
    mean: Optional[torch.Tensor] = None
    matrix: Optional[torch.Tensor] = None
    inverse: Optional[torch.Tensor] = None

    def scale(self, x):
        if self.factor is not None:
            x = x * self.factor
        if self.matrix is not None:
            x = (x - self.mean) @ self.matrix
        return x

    def unscale(self, y):
        if self.matrix is not None:
            y = y @ self.inverse + self.mean
        if self.factor is not None:
            y = y / self.factor
        return y

    def to(self, device):
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Scaler(self.factor, move(self.mean), move(self.matrix), move(self.inverse))


@dataclass
class Sae:
    """An SAE as the metric needs it: x → x̂ (and its codes), in float32."""

    layout: str
    kind: str
    tensors: dict
    # (sae_in, tensors) → codes; sae_in is the normalised input with b_dec already subtracted.
    encoder: Callable
    subtract_b_dec: bool = True
    row_norm: str = "none"
    scaler: Optional[Scaler] = None
    k: Optional[int] = None
    hook_name: Optional[str] = None
    path: str = ""

    @property
    def d_in(self):
        return self.tensors["W_dec"].shape[1]

    @property
    def d_sae(self):
        return self.tensors["W_dec"].shape[0]

    def to(self, device):
        self.tensors = {name: t.to(device) for name, t in self.tensors.items()}
        if self.scaler is not None:
            self.scaler = self.scaler.to(device)
        return self

    def __call__(self, x):
        """(x̂, codes) for rows x [..., d_in]."""
        t = self.tensors
        if self.scaler is not None:
            x = self.scaler.scale(x)
        x, undo = row_norm_in(x, self.row_norm)
        if self.subtract_b_dec:
            x = x - t["b_dec"]
        codes = self.encoder(x, t)
        y = undo(codes @ t["W_dec"] + t["b_dec"])
        if self.scaler is not None:
            y = self.scaler.unscale(y)
        return y, codes


def row_norm_in(x, mode):
    """SAELens' run-time normalisation of each row, and the function that undoes it."""
    if mode == "constant_norm_rescale":
        coeff = x.shape[-1] ** 0.5 / x.norm(dim=-1, keepdim=True)
        return x * coeff, lambda y: y / coeff
    if mode == "layer_norm":
        mu = x.mean(dim=-1, keepdim=True)
        std = (x - mu).std(dim=-1, keepdim=True)
        return (x - mu) / (std + 1e-5), lambda y: y * std + mu
    return x, lambda y: y


def topk_codes(pre, k):
    values, indices = pre.topk(k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter(-1, indices, values.relu())


def groupmax_codes(pre, k):
    """sparsify's groupmax: the largest ReLU pre-activation of each of k equal groups."""
    groups = pre.relu().unflatten(-1, (k, -1))
    values, indices = groups.max(dim=-1)
    return torch.zeros_like(groups).scatter(-1, indices[..., None], values[..., None]).flatten(-2)


def linear_encoder(select):
    return lambda x, t: select(x @ t["W_enc"] + t["b_enc"], t)


def gated_encoder(x, t):
    gate = (x @ t["W_enc"] + t["b_gate"]) > 0
    magnitude = (x @ (t["W_enc"] * t["r_mag"].exp()) + t["b_mag"]).relu()
    return magnitude * gate


def jumprelu_select(pre, t):
    return pre.relu() * (pre > t["threshold"])


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise Refusal(f"{path}: cannot read JSON ({e})")


def read_tensors(path, names, shapes, optional=()):
    """The named tensors of a safetensors file (and those of `optional` it holds) as float32, each
    checked against its shape; and everything the file holds, as stored."""
    try:
        found = load_file(str(path))
    except Exception as e:  # safetensors raises its own error types
        raise Refusal(f"{path}: cannot read safetensors ({e})")
    out = {}
    for name in list(names) + [n for n in optional if n in found]:
        if name not in found:
            raise Refusal(f"{path}: no tensor \"{name}\" (holds: {', '.join(sorted(found))})")
        tensor = found[name].float()
        if name in shapes and tuple(tensor.shape) != shapes[name]:
            raise Refusal(f"{path}: \"{name}\" is {list(tensor.shape)}, expected {list(shapes[name])}")
        out[name] = tensor
    return out, found


def positive_int(cfg, key, path):
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise Refusal(f"{path}: \"{key}\" must be a positive integer, not {value!r}")
    return value


def load_sparsify(directory):
    cfg_path = directory / "cfg.json"
    cfg = read_json(cfg_path)
    if cfg.get("transcode") or cfg.get("skip_connection"):
        raise Refusal(f"{cfg_path}: a transcoder (transcode/skip_connection); {NOT_AN_SAE}")
    activation = cfg.get("activation", "topk")
    if activation not in ("topk", "groupmax"):
        raise Refusal(f"{cfg_path}: sparsify activation \"{activation}\" is not supported "
                      "(known: topk, groupmax)")
    d = positive_int(cfg, "d_in", cfg_path)
    k = positive_int(cfg, "k", cfg_path)
    n = cfg.get("num_latents") or d * positive_int(cfg, "expansion_factor", cfg_path)
    shapes = {"encoder.weight": (n, d), "encoder.bias": (n,), "W_dec": (n, d), "b_dec": (d,)}
    raw, _ = read_tensors(directory / "sae.safetensors", list(shapes), shapes)
    tensors = {"W_enc": raw["encoder.weight"].T.contiguous(), "b_enc": raw["encoder.bias"],
               "W_dec": raw["W_dec"], "b_dec": raw["b_dec"]}
    select = topk_codes if activation == "topk" else groupmax_codes
    if activation == "groupmax" and n % k:
        raise Refusal(f"{cfg_path}: groupmax needs num_latents ({n}) divisible by k ({k})")
    encoder = linear_encoder(lambda pre, t: select(pre, k))
    return Sae("sparsify", activation, tensors, encoder, k=k, path=str(directory))


SAELENS_ARCHITECTURES = ("standard", "topk", "jumprelu", "gated", "batchtopk",
                         "matryoshka_batchtopk")
NORMALIZATIONS = ("none", "constant_norm_rescale", "layer_norm", "expected_average_only_in",
                  "covariance_whitening")


def saelens_architecture(cfg, cfg_path):
    """(architecture, k) with SAELens < 5's `activation_fn_str` read as the activation it names."""
    architecture = cfg.get("architecture", "standard")
    k = cfg.get("k")
    activation = cfg.get("activation_fn_str") or cfg.get("activation_fn")
    if architecture == "standard" and activation == "topk":
        architecture, k = "topk", (cfg.get("activation_fn_kwargs") or {}).get("k")
    elif activation not in (None, "relu", "topk"):
        raise Refusal(f"{cfg_path}: \"activation_fn_str\": \"{activation}\" is not supported "
                      "(known: relu, topk)")
    if "transcoder" in architecture or cfg.get("d_out", cfg.get("d_in")) != cfg.get("d_in"):
        raise Refusal(f"{cfg_path}: a transcoder (architecture \"{architecture}\"); {NOT_AN_SAE}")
    if architecture not in SAELENS_ARCHITECTURES:
        known = ", ".join(SAELENS_ARCHITECTURES)
        raise Refusal(f"{cfg_path}: unknown SAELens architecture \"{architecture}\" (known: {known})")
    return architecture, k


def check_saelens_options(cfg, cfg_path):
    if cfg.get("finetuning_scaling_factor") is True:
        raise Refusal(f"{cfg_path}: \"finetuning_scaling_factor\": true is not supported")
    if cfg.get("reshape_activations", "none") not in ("none", None):
        value = cfg["reshape_activations"]
        raise Refusal(f"{cfg_path}: \"reshape_activations\": \"{value}\" is not a residual-stream SAE")
    if cfg.get("hook_head_index") is not None:
        raise Refusal(f"{cfg_path}: an SAE of one attention head is not a residual-stream SAE")


def read_scaler(directory, mode):
    """The scaler a training checkpoint needs for `expected_average_only_in` or whitening."""
    if mode not in ("expected_average_only_in", "covariance_whitening"):
        return None
    path = directory / "activation_scaler.json"
    saved = read_json(path) if path.is_file() else {}
    scaler = Scaler(factor=saved.get("scaling_factor"))
    whitening = directory / "activation_whitening.safetensors"
    if saved.get("has_whitening", True) and whitening.is_file():
        names = ["mean", "matrix", "inverse_matrix"]
        w, _ = read_tensors(whitening, names, {})
        scaler.mean, scaler.matrix, scaler.inverse = w["mean"], w["matrix"], w["inverse_matrix"]
    needs = {"expected_average_only_in": ("the scaling factor it was trained with (activation_scaler.json)",
                                          scaler.factor is None),
             "covariance_whitening": ("activation_scaler.json and activation_whitening.safetensors",
                                      scaler.matrix is None)}
    what, missing = needs[mode]
    if missing:
        raise Refusal(f"{directory}: \"normalize_activations\": \"{mode}\" needs {what}, which is not there")
    return scaler


def fold_decoder_norms(t):
    """SAELens' fold_W_dec_norm: TopK of h·‖W_dec,i‖ decoded through f/‖W_dec,i‖, exactly."""
    norms = t["W_dec"].norm(dim=-1).clamp(min=1e-8)
    t["W_dec"] = t["W_dec"] / norms[:, None]
    t["W_enc"] = t["W_enc"] * norms
    t["b_enc"] = t["b_enc"] * norms


def saelens_selection(architecture, k, tensors, found, cfg_path):
    """The encoder of each architecture; BatchTopK-family checkpoints become JumpReLU."""
    if architecture == "gated":
        return gated_encoder, "gated"
    if architecture == "standard":
        return linear_encoder(lambda pre, t: pre.relu()), "standard"
    if architecture == "topk":
        if not isinstance(k, int) or k <= 0:
            raise Refusal(f"{cfg_path}: topk needs a positive integer \"k\", not {k!r}")
        return linear_encoder(lambda pre, t: topk_codes(pre, k)), "topk"
    if "threshold" not in found and "topk_threshold" in found:
        # A BatchTopK training checkpoint: what SAELens' inference export would hold.
        tensors["threshold"] = torch.full_like(tensors["b_enc"], float(found["topk_threshold"]))
    if "threshold" not in tensors:
        raise Refusal(f"{cfg_path}: {architecture} needs a \"threshold\" tensor")
    kind = "jumprelu" if architecture == "jumprelu" else f"{architecture} (as jumprelu)"
    return linear_encoder(jumprelu_select), kind


def load_saelens(directory):
    cfg_path = directory / "cfg.json"
    cfg = read_json(cfg_path)
    architecture, k = saelens_architecture(cfg, cfg_path)
    check_saelens_options(cfg, cfg_path)
    d, n = positive_int(cfg, "d_in", cfg_path), positive_int(cfg, "d_sae", cfg_path)
    shapes = {"W_enc": (d, n), "W_dec": (n, d), "b_dec": (d,), "b_enc": (n,), "threshold": (n,),
              "b_gate": (n,), "r_mag": (n,), "b_mag": (n,)}
    biases = ["b_gate", "r_mag", "b_mag"] if architecture == "gated" else ["b_enc"]
    names = ["W_enc", "W_dec", "b_dec"] + biases
    weights = directory / "sae_weights.safetensors"
    tensors, found = read_tensors(weights, names, shapes, optional=["threshold"])
    rescale = cfg.get("rescale_acts_by_decoder_norm") is True
    if rescale and architecture in ("standard", "jumprelu", "gated"):
        raise Refusal(f"{cfg_path}: \"rescale_acts_by_decoder_norm\": true with architecture "
                      f"\"{architecture}\" is not supported")
    if rescale and "threshold" not in found:
        fold_decoder_norms(tensors)
    encoder, kind = saelens_selection(architecture, k, tensors, found, cfg_path)
    mode = cfg.get("normalize_activations") or "none"
    if mode not in NORMALIZATIONS:
        known = ", ".join(NORMALIZATIONS)
        raise Refusal(f"{cfg_path}: \"normalize_activations\": \"{mode}\" is not supported (known: {known})")
    metadata = cfg.get("metadata") or {}
    return Sae("saelens", kind, tensors, encoder,
               subtract_b_dec=cfg.get("apply_b_dec_to_input", True) is not False,
               row_norm=mode if mode in ("constant_norm_rescale", "layer_norm") else "none",
               scaler=read_scaler(directory, mode), k=k if architecture == "topk" else None,
               hook_name=metadata.get("hook_name", cfg.get("hook_name")), path=str(directory))


def holds_sae(directory):
    weights = ("sae.safetensors", "sae_weights.safetensors")
    return (directory / "cfg.json").is_file() and any((directory / w).is_file() for w in weights)


def layer_of_name(name):
    """The --layer a hook name or sparsify hookpoint denotes, where it names a block output."""
    if not name:
        return None
    match = (re.fullmatch(r"(?:.*\.)?(?:layers|h)\.(\d+)", name)
             or re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", name))
    if match:
        return int(match.group(1)) + 1
    match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_pre", name)
    return int(match.group(1)) if match else None


def pick_hookpoint(directory, layer):
    """One hookpoint subdirectory of a sparsify save: the only one, or the one for --layer."""
    subdirs = sorted(p for p in directory.iterdir() if p.is_dir() and holds_sae(p))
    if len(subdirs) == 1:
        return subdirs[0]
    matching = [p for p in subdirs if layer_of_name(p.name) == layer]
    if len(matching) == 1:
        return matching[0]
    if not subdirs:
        raise Refusal(f"{directory}: no SAE found (expected sae.safetensors, sae_weights.safetensors, "
                      "a run directory with sparsify/ or saelens/, or hookpoint subdirectories)")
    names = ", ".join(p.name for p in subdirs)
    raise Refusal(f"{directory}: holds SAEs for several hookpoints ({names}), none of them the output "
                  f"of block {layer}; pass the subdirectory")


def load_run(directory):
    """A `sae train` run directory: its sparsify/ export, else its saelens/ one (as our loader)."""
    config = read_json(directory / "config.json").get("config", {})
    if config.get("transcoder"):
        raise Refusal(f"{directory}: a transcoder run (config.json \"transcoder\": true); {NOT_AN_SAE}")
    for sub, load in (("sparsify", load_sparsify), ("saelens", load_saelens)):
        if holds_sae(directory / sub):
            sae = load(directory / sub)
            sae.layout = f"run/{sub}"
            tensor = config.get("tensor")
            if tensor and tensor != "activations" and not sae.hook_name:
                sae.hook_name = tensor
            return sae
    raise Refusal(f"{directory}: a run directory without a sparsify/ or saelens/ export")


def load_sae(path, layer):
    directory = Path(path)
    if not directory.exists():
        raise Refusal(f"{path}: no such directory")
    if not directory.is_dir():
        raise Refusal(f"{path}: not a directory (expected an SAE checkpoint directory)")
    if (directory / "sae.safetensors").is_file():
        sae = load_sparsify(directory)
    elif (directory / "sae_weights.safetensors").is_file():
        sae = load_saelens(directory)
    elif (directory / "config.json").is_file() and (
            holds_sae(directory / "sparsify") or holds_sae(directory / "saelens")):
        sae = load_run(directory)
    else:
        inner = pick_hookpoint(directory, layer)
        sae = load_sae(inner, layer)
        sae.hook_name = sae.hook_name or inner.name
    return sae


# ---------------------------------------------------------------------------------------------
# Texts and windows


def read_texts(path):
    """One JSON string per line (blank lines skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise Refusal(f"{path}: cannot read ({e})")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)
        except ValueError:
            raise Refusal(f"{path}:{number}: not a JSON string")
        if not isinstance(text, str):
            raise Refusal(f"{path}:{number}: not a JSON string (a {type(text).__name__})")
        yield text


def end_of_text_id(tokenizer):
    """The token that starts each window and joins texts: <|endoftext|> where the vocabulary has
    it (SmolLM2, GPT-2: what the shared shards used), else BOS, else EOS."""
    vocab = tokenizer.get_vocab()
    if "<|endoftext|>" in vocab:
        return vocab["<|endoftext|>"]
    for candidate in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    raise Refusal("the tokenizer has neither <|endoftext|>, BOS nor EOS to start windows with")


def make_windows(texts, tokenizer, start_id, context, max_windows):
    """[W, context] token ids: start_id + context−1 tokens of the joined texts, per window."""
    body, stream, windows = context - 1, [], []
    for i, text in enumerate(texts):
        if max_windows is not None and len(windows) >= max_windows:
            break
        if i:
            stream.append(start_id)
        stream.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        while len(stream) >= body and (max_windows is None or len(windows) < max_windows):
            windows.append([start_id] + stream[:body])
            del stream[:body]
    return torch.tensor(windows, dtype=torch.long).reshape(-1, context)


# ---------------------------------------------------------------------------------------------
# The model


def load_model(name, device):
    """A hub name, a local directory, or a GGUF file (dequantized by transformers), in float32."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    path, kwargs = Path(name), {}
    source = name
    if path.is_file():
        if path.suffix != ".gguf":
            raise Refusal(f"{name}: a file that is not .gguf (pass a model directory, a hub name "
                          "or a GGUF file)")
        source, kwargs = str(path.parent), {"gguf_file": path.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
    except Exception as e:  # missing files, unknown architectures, hub errors
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise Refusal(f"{name}: cannot load the model ({first})")
    return tokenizer, model.to(device).eval()


def blocks_of(model):
    """The residual blocks, and how to name block i's output, for Llama-family models and GPT-2."""
    inner = getattr(model, "model", None)
    if isinstance(getattr(inner, "layers", None), torch.nn.ModuleList):
        return inner.layers, "model.model.layers"
    transformer = getattr(model, "transformer", None)
    if isinstance(getattr(transformer, "h", None), torch.nn.ModuleList):
        return transformer.h, "transformer.h"
    raise Refusal(f"{type(model).__name__}: not supported (Llama-family models with "
                  "model.model.layers, or GPT-2 with transformer.h)")


class Splice:
    """Forward hook on one block: in mode "sae" its output is replaced by the SAE's reconstruction
    on the patched positions, in mode "zero" by zeros there; "clean" leaves it alone. In "sae"
    mode it also accumulates the SAE's reconstruction statistics on the scored rows."""

    def __init__(self, sae, stats):
        self.sae, self.stats = sae, stats
        self.mode, self.scored, self.patch = "clean", None, None

    def __call__(self, module, args, output):
        if self.mode == "clean":
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        if self.mode == "sae":
            new, codes = self.sae(hidden)
            self.stats.add(hidden, new, codes, self.scored)
        else:
            new = torch.zeros_like(hidden)
        patched = torch.where(self.patch[..., None], new, hidden)
        return (patched,) + tuple(output[1:]) if isinstance(output, tuple) else patched


class RowSums:
    """Streaming sums for FVU, MSE and L0 over a set of rows."""

    def __init__(self):
        self.n, self.sq_err, self.sq_sum, self.l0, self.sum = 0, 0.0, 0.0, 0, 0.0

    def add(self, rows, rows_hat, codes):
        rows, rows_hat = rows.double(), rows_hat.double()
        self.n += rows.shape[0]
        self.sq_err += (rows - rows_hat).pow(2).sum().item()
        self.sq_sum += rows.pow(2).sum().item()
        self.sum = self.sum + rows.sum(dim=0)
        self.l0 += int((codes != 0).sum().item())

    def merged(self, other):
        out = RowSums()
        for name in ("n", "sq_err", "sq_sum", "l0", "sum"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        return out

    def fvu(self):
        if not self.n:
            return None
        variance = self.sq_sum - (self.sum.pow(2).sum().item() if torch.is_tensor(self.sum) else 0.0) / self.n
        return self.sq_err / variance if variance > 0 else None


class ReconStats:
    """The SAE's FVU, MSE and L0 over the scored rows (the rows the shared shards hold: no
    position 0, no special token); its relative squared error at position 0 (the attention sink);
    and the scored rows of massive norm (over 10× the median of the first batch's scored rows:
    other attention sinks, which the shared shards do not hold) counted apart, since one such row
    can outweigh thousands of ordinary ones in the FVU."""

    MASSIVE = 10.0

    def __init__(self):
        self.normal, self.massive, self.reference = RowSums(), RowSums(), None
        self.sink_err, self.sink_norm = 0.0, 0.0

    def add(self, x, x_hat, codes, scored):
        rows, rows_hat, row_codes = x[scored], x_hat[scored], codes[scored]
        norms = rows.norm(dim=-1)
        if self.reference is None and len(norms):
            self.reference = norms.median().item()
        big = norms > self.MASSIVE * self.reference if self.reference is not None else norms < 0
        self.normal.add(rows[~big], rows_hat[~big], row_codes[~big])
        self.massive.add(rows[big], rows_hat[big], row_codes[big])
        self.sink_err += (x[:, 0] - x_hat[:, 0]).double().pow(2).sum().item()
        self.sink_norm += x[:, 0].double().pow(2).sum().item()

    def report(self):
        every = self.normal.merged(self.massive)
        if not every.n:
            return {}
        return {"fvu": every.fvu(), "mse": every.sq_err / every.n, "l0": every.l0 / every.n,
                "position0_rel_sq_error": self.sink_err / self.sink_norm if self.sink_norm else None,
                "massive_rows": self.massive.n,
                "massive_rows_error_share": self.massive.sq_err / every.sq_err if every.sq_err else 0.0,
                "fvu_without_massive_rows": self.normal.fvu()}


def log_probs(model, tokens):
    return F.log_softmax(model(input_ids=tokens, use_cache=False).logits.float(), dim=-1)


def token_ce(logp, tokens):
    """[B, T−1]: −log p(token t+1) at position t."""
    return -logp[:, :-1].gather(-1, tokens[:, 1:, None]).squeeze(-1)


def token_kl(clean_logp, logp):
    """[B, T]: KL(clean ‖ patched) summed over the vocabulary."""
    return F.kl_div(logp, clean_logp, log_target=True, reduction="none").sum(-1)


class Totals:
    def __init__(self):
        self.sums = {}
        self.counts = {}

    def add(self, name, values, mask):
        self.sums[name] = self.sums.get(name, 0.0) + values[mask].double().sum().item()
        self.counts[name] = self.counts.get(name, 0) + int(mask.sum().item())

    def count(self, name, n):
        self.counts[name] = self.counts.get(name, 0) + n

    def mean(self, name):
        return self.sums[name] / self.counts[name] if self.counts.get(name) else None


def scored_mask(tokens, special_ids):
    """Positions whose input token counts: not special, not position 0."""
    mask = ~torch.isin(tokens, torch.tensor(sorted(special_ids), dtype=tokens.dtype, device=tokens.device))
    mask[:, 0] = False
    return mask


@torch.inference_mode()
def measure(model, block, sae, windows, special_ids, keep_bos, batch_size, device):
    stats, totals = ReconStats(), Totals()
    splice = Splice(sae, stats)
    handle = block.register_forward_hook(splice)
    try:
        for batch in windows.split(batch_size):
            batch = batch.to(device)
            scored = splice.scored = scored_mask(batch, special_ids)
            splice.patch = torch.ones_like(scored) if keep_bos else scored
            totals.count("patched_rows", int(splice.patch.sum()))
            splice.mode = "clean"
            clean = log_probs(model, batch)
            totals.add("ce_clean", token_ce(clean, batch), scored[:, :-1])
            for mode in ("sae", "zero"):
                splice.mode = mode
                patched = log_probs(model, batch)
                totals.add(f"ce_{mode}", token_ce(patched, batch), scored[:, :-1])
                totals.add(f"kl_{mode}", token_kl(clean, patched), scored)
                del patched
    finally:
        handle.remove()
    return totals, stats


def scores(totals):
    ce = {m: totals.mean(f"ce_{m}") for m in ("clean", "sae", "zero")}
    kl = {m: totals.mean(f"kl_{m}") for m in ("sae", "zero")}
    if ce["clean"] is None:
        raise Refusal("no scored token: every window holds only special tokens")
    ce_gap = ce["zero"] - ce["clean"]
    return {"ce_clean": ce["clean"], "ce_sae": ce["sae"], "ce_zero": ce["zero"],
            "ce_loss_score": (ce["zero"] - ce["sae"]) / ce_gap if ce_gap else None,
            "kl_sae": kl["sae"], "kl_zero": kl["zero"],
            "kl_div_score": (kl["zero"] - kl["sae"]) / kl["zero"] if kl["zero"] else None,
            "tokens": totals.counts["ce_clean"], "tokens_kl": totals.counts["kl_sae"]}


# ---------------------------------------------------------------------------------------------
# Command line


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage block is more than the one line we promise
        raise Refusal(f"{message} (see --help)")


def add_window_args(parser, layer_help):
    """The model, the text windows it reads and how: the flags this script and
    cache_components.py share."""
    parser.add_argument("--model", required=True, help="hub name, model directory or GGUF file")
    parser.add_argument("--layer", type=int, required=True, help=layer_help)
    parser.add_argument("--texts", required=True, help="one JSON string per line")
    parser.add_argument("--context", type=int, required=True,
                        help="tokens per window, the first being <|endoftext|>")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    parser.add_argument("--max-windows", type=int, help="use at most this many windows")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")


def check_window_args(args):
    """Refuses shared flags' values that cannot work, one line each."""
    if args.context < 2:
        raise Refusal(f"--context {args.context}: need at least 2 tokens per window")
    for flag in ("batch_size", "max_windows"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise Refusal(f"--{flag.replace('_', '-')} {value}: must be positive")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise Refusal("--device cuda: no CUDA device is available")


def parse_args(argv):
    parser = Parser(prog="downstream_loss.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("sae", help="SAE directory (sparsify, SAELens, or a `sae train` run)")
    add_window_args(parser, "splice the output of block L (HF hidden_states[L])")
    parser.add_argument("--keep-bos-recon", action="store_true",
                        help="splice at every position, position 0 and special tokens included "
                             "(SAEBench's default)")
    args = parser.parse_args(argv)
    check_window_args(args)
    return args


def check_fit(sae, model, blocks, layer):
    depth, width = len(blocks), model.config.get_text_config().hidden_size
    if not 1 <= layer <= depth:
        raise Refusal(f"--layer {layer}: out of range (the model has {depth} blocks: 1..{depth})")
    if sae.d_in != width:
        raise Refusal(f"{sae.path}: the SAE reads {sae.d_in} values per row, the model's residual "
                      f"stream has {width}")
    declared = layer_of_name(sae.hook_name)
    if declared is not None and declared != layer:
        print(f"{PROG}: warning: the SAE names hook {sae.hook_name} (block {declared}'s output), "
              f"spliced at --layer {layer}", file=sys.stderr)


def hook_description(blocks_name, layer, depth):
    where = f"{blocks_name}[{layer - 1}] output = TransformerLens blocks.{layer - 1}.hook_resid_post"
    # HF's last hidden state has the final norm applied; the last block's output does not.
    return where + (f" = HF hidden_states[{layer}]" if layer < depth else " (before the final norm)")


def run(argv):
    started = time.time()
    args = parse_args(argv)
    if not Path(args.texts).is_file():
        raise Refusal(f"{args.texts}: no such file")
    sae = load_sae(args.sae, args.layer)
    tokenizer, model = load_model(args.model, args.device)
    blocks, blocks_name = blocks_of(model)
    check_fit(sae, model, blocks, args.layer)
    start_id = end_of_text_id(tokenizer)
    windows = make_windows(read_texts(args.texts), tokenizer, start_id, args.context, args.max_windows)
    if not len(windows):
        raise Refusal(f"{args.texts}: the texts make no window of {args.context} tokens")
    special = set(tokenizer.all_special_ids)
    totals, stats = measure(model, blocks[args.layer - 1], sae.to(args.device), windows, special,
                            args.keep_bos_recon, args.batch_size, args.device)
    return {
        **scores(totals), **stats.report(),
        "bos_recon": args.keep_bos_recon, "patched_rows": totals.counts["patched_rows"],
        "patched_positions": "every position" if args.keep_bos_recon
        else "positions 1.. whose token is not special",
        "windows": len(windows), "context": args.context, "layer": args.layer,
        "hook": hook_description(blocks_name, args.layer, len(blocks)),
        "model": args.model, "sae": args.sae, "sae_layout": sae.layout, "sae_kind": sae.kind,
        "sae_hook_name": sae.hook_name, "d_in": sae.d_in, "d_sae": sae.d_sae, "k": sae.k,
        "window_start_token": start_id, "excluded_token_ids": sorted(special),
        "device": args.device, "dtype": "float32", "seconds": round(time.time() - started, 1),
    }


def run_main(run_fn, prog, argv=None):
    """Runs a script's `run_fn(argv)` and prints its result as one JSON line; a failure is one
    line on stderr (exit 2 for a refusal of the input, 1 for anything else), never a traceback."""
    try:
        result = run_fn(argv)
    except Refusal as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - the promise is one line, never a traceback
        message = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"{prog}: error: {type(e).__name__}: {message}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


def main(argv=None):
    return run_main(run, PROG, argv)


if __name__ == "__main__":
    sys.exit(main())
