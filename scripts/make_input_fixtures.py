"""Writes the small input fixtures under tests/fixtures/ with the Python tools' own code:

- saelens/<variant>/: SAEs saved by the real sae-lens package (`save_model` /
  `save_inference_model`), one per inference variant we must compute exactly, and
  saelens/expected/<variant>.safetensors: SAELens's own `encode` (`feature_acts`) and
  `decode` (`sae_out`) of the rows in saelens/rows.safetensors (rows of very different norms,
  so any normalisation matters).
- transcoders/<variant>/: transcoders saved by the packages themselves: SAELens' four
  transcoder classes (transcoder, skip_transcoder, jumprelu_transcoder,
  jumprelu_skip_transcoder; d_out ≠ d_in) and sparsify's (transcode, with and without
  skip_connection; d_out = d_in), with transcoders/expected/<variant>.safetensors: the package's
  own codes (`feature_acts`) and forward output (`sae_out`, skip path included) on the rows of
  transcoders/rows.safetensors (`activations` of varied norms, and `target` / `target_square`
  to compare them with).
- saelens-cache/: an activation cache written by SAELens's own shard path
  (`CacheActivationsRunner._create_shard`, `Dataset.save_to_disk`, `_consolidate_shards`),
  with cache-flat.safetensors holding the same rows flattened, as a shard.
- npy/: NumPy arrays written by numpy itself (f32, f16, [n, 1, d], a sibling tokens file,
  an .npz, and the bad cases: Fortran order, an object array, a compressed .npz).

Run with the virtualenv of scripts/check-python-loaders.sh (it has sae-lens):
    ~/.cache/sae-wgpu/pyloaders/bin/python scripts/make_input_fixtures.py tests/fixtures
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

import sae_lens
from sae_lens import (
    CacheActivationsRunner,
    GatedSAE,
    GatedSAEConfig,
    JumpReLUSAE,
    JumpReLUSAEConfig,
    StandardSAE,
    StandardSAEConfig,
    TopKSAE,
    TopKSAEConfig,
    TopKTrainingSAE,
    TopKTrainingSAEConfig,
)
from sae_lens.training.activation_scaler import ActivationScaler, ActivationWhitening

D_IN, D_SAE, ROWS, K = 24, 40, 37, 5


def randomise(sae, gen):
    """Random weights with decoder rows of norms 0.5–2 and non-zero biases."""
    with torch.no_grad():
        for name, param in sae.named_parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
        norms = 0.5 + 1.5 * torch.rand(D_SAE, 1, generator=gen)
        sae.W_dec.copy_(sae.W_dec / sae.W_dec.norm(dim=-1, keepdim=True) * norms)
        if hasattr(sae, "threshold"):
            sae.threshold.copy_(0.2 * torch.rand(D_SAE, generator=gen) - 0.02)
        if hasattr(sae, "r_mag"):
            sae.r_mag.copy_(0.5 * torch.randn(D_SAE, generator=gen))
    return sae


def rows(gen):
    x = torch.randn(ROWS, D_IN, generator=gen) + 0.7
    scales = torch.logspace(-1, 1, ROWS)[torch.randperm(ROWS, generator=gen)]
    return x * scales.unsqueeze(1)


def metadata():
    return {"model_name": "fixture-model", "hook_name": "blocks.3.hook_resid_post", "context_size": 16}


def variants():
    """(name, sae, scaler applied around it as SAELens' trainer and evals do)."""
    gen = torch.Generator().manual_seed(1234)
    common = dict(d_in=D_IN, d_sae=D_SAE)
    out = []

    def add(name, sae, scaler=None):
        out.append((name, randomise(sae, gen), scaler))

    add("standard", StandardSAE(StandardSAEConfig(**common)))
    add("standard-no-b-dec-in", StandardSAE(StandardSAEConfig(**common, apply_b_dec_to_input=False)))
    add("standard-constant-norm", StandardSAE(StandardSAEConfig(**common, normalize_activations="constant_norm_rescale")))
    add("standard-layer-norm", StandardSAE(StandardSAEConfig(**common, normalize_activations="layer_norm")))
    add("topk", TopKSAE(TopKSAEConfig(**common, k=K)))
    add("topk-constant-norm", TopKSAE(TopKSAEConfig(**common, k=K, normalize_activations="constant_norm_rescale")))
    # What SAELens' TopK trainer writes: rescale_acts_by_decoder_norm stays true.
    add("topk-trained", TopKTrainingSAE(TopKTrainingSAEConfig(**common, k=K)))
    add("jumprelu", JumpReLUSAE(JumpReLUSAEConfig(**common)))
    add("jumprelu-layer-norm", JumpReLUSAE(JumpReLUSAEConfig(**common, normalize_activations="layer_norm")))
    add("gated", GatedSAE(GatedSAEConfig(**common)))
    add("gated-constant-norm", GatedSAE(GatedSAEConfig(**common, normalize_activations="constant_norm_rescale")))
    # A training checkpoint before folding: the scaler lives beside the weights.
    add("standard-expected-average", StandardSAE(StandardSAEConfig(**common, normalize_activations="expected_average_only_in")),
        ActivationScaler(scaling_factor=0.37))
    add("topk-trained-expected-average",
        TopKTrainingSAE(TopKTrainingSAEConfig(**common, k=K, normalize_activations="expected_average_only_in")),
        ActivationScaler(scaling_factor=2.5))
    mean = torch.randn(D_IN, generator=gen, dtype=torch.float64) * 0.5
    a = torch.randn(D_IN, D_IN, generator=gen, dtype=torch.float64) / D_IN**0.5 + torch.eye(D_IN, dtype=torch.float64)
    whitening = ActivationWhitening(mean=mean, matrix=a, inverse_matrix=torch.linalg.inv(a))
    add("jumprelu-whitening", JumpReLUSAE(JumpReLUSAEConfig(**common, normalize_activations="covariance_whitening")),
        ActivationScaler(scaling_factor=None, whitening=whitening))
    return out


def save(name, sae, directory):
    directory.mkdir(parents=True, exist_ok=True)
    sae.cfg.metadata.model_name = metadata()["model_name"]
    sae.cfg.metadata.hook_name = metadata()["hook_name"]
    sae.cfg.metadata.context_size = metadata()["context_size"]
    if hasattr(sae, "save_inference_model"):
        sae.save_inference_model(directory)
    else:
        sae.save_model(directory)


def write_saelens(root):
    gen = torch.Generator().manual_seed(99)
    x = rows(gen)
    base = root / "saelens"
    if base.exists():
        shutil.rmtree(base)
    (base / "expected").mkdir(parents=True)
    save_file({"activations": x.contiguous()}, base / "rows.safetensors")
    for name, sae, scaler in variants():
        directory = base / name
        save(name, sae, directory)
        if scaler is not None:
            scaler.save(str(directory / "activation_scaler.json"))
        # Reload what was written, as a user would, and compute with SAELens itself.
        loaded = sae_lens.SAE.load_from_disk(str(directory), device="cpu")
        with torch.no_grad():
            sae_in = scaler.scale(x) if scaler is not None else x
            acts = loaded.encode(sae_in)
            out = loaded.decode(acts)
            if scaler is not None:
                out = scaler.unscale(out)
        save_file({"feature_acts": acts.contiguous(), "sae_out": out.contiguous()},
                  base / "expected" / f"{name}.safetensors")
        cfg = json.loads((directory / "cfg.json").read_text())
        print(f"{name}: architecture {cfg['architecture']}, normalize {cfg['normalize_activations']}, "
              f"L0 {(acts != 0).sum(-1).float().mean():.1f}")


D_OUT = 17


def randomise_transcoder(params, gen, d_sae):
    """Random weights (decoder rows of norms 0.5–2, non-zero biases, a non-zero skip)."""
    with torch.no_grad():
        for name, param in params.named_parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
        w_dec = params.W_dec
        norms = 0.5 + 1.5 * torch.rand(d_sae, 1, generator=gen)
        w_dec.copy_(w_dec / w_dec.norm(dim=-1, keepdim=True) * norms)
        if hasattr(params, "threshold"):
            params.threshold.copy_(0.2 * torch.rand(d_sae, generator=gen) + 0.01)
    return params


def write_transcoders(root):
    from sae_lens import (JumpReLUSkipTranscoder, JumpReLUSkipTranscoderConfig, JumpReLUTranscoder,
                          JumpReLUTranscoderConfig, SkipTranscoder, SkipTranscoderConfig, Transcoder,
                          TranscoderConfig)
    from sparsify import SparseCoder, SparseCoderConfig

    gen = torch.Generator().manual_seed(4321)
    x = rows(gen)
    target = torch.randn(ROWS, D_OUT, generator=gen) * 2 + 0.5
    target_square = torch.randn(ROWS, D_IN, generator=gen) * 2 + 0.5
    base = root / "transcoders"
    if base.exists():
        shutil.rmtree(base)
    (base / "expected").mkdir(parents=True)
    save_file({"activations": x.contiguous(), "target": target.contiguous(),
               "target_square": target_square.contiguous()}, base / "rows.safetensors")
    common = dict(d_in=D_IN, d_sae=D_SAE, d_out=D_OUT)
    saelens_classes = [
        ("transcoder", Transcoder, TranscoderConfig),
        ("skip_transcoder", SkipTranscoder, SkipTranscoderConfig),
        ("jumprelu_transcoder", JumpReLUTranscoder, JumpReLUTranscoderConfig),
        ("jumprelu_skip_transcoder", JumpReLUSkipTranscoder, JumpReLUSkipTranscoderConfig),
    ]
    for name, cls, cfg_cls in saelens_classes:
        sae = randomise_transcoder(cls(cfg_cls(**common, apply_b_dec_to_input=False)), gen, D_SAE)
        save(name, sae, base / name)
        loaded = sae_lens.SAE.load_from_disk(str(base / name), device="cpu")
        with torch.no_grad():
            acts = loaded.encode(x)
            out = loaded(x)
        save_file({"feature_acts": acts.contiguous(), "sae_out": out.contiguous()},
                  base / "expected" / f"{name}.safetensors")
        print(f"{name}: {type(loaded).__name__}, L0 {(acts != 0).sum(-1).float().mean():.1f}")
    for name, skip in [("sparsify-transcoder", False), ("sparsify-skip-transcoder", True)]:
        cfg = SparseCoderConfig(num_latents=D_SAE, k=K, transcode=True, skip_connection=skip)
        coder = randomise_transcoder(SparseCoder(D_IN, cfg), gen, D_SAE)
        coder.save_to_disk(base / name)
        loaded = SparseCoder.load_from_disk(base / name, device="cpu")
        with torch.no_grad():
            top_acts, top_indices, _ = loaded.encode(x)
            acts = torch.zeros(ROWS, D_SAE).scatter(1, top_indices, top_acts)
            out = loaded(x, target_square).sae_out
        save_file({"feature_acts": acts.contiguous(), "sae_out": out.contiguous()},
                  base / "expected" / f"{name}.safetensors")
        print(f"{name}: skip_connection {skip}, L0 {(acts != 0).sum(-1).float().mean():.1f}")


class _Cfg:
    pass


def write_cache(root):
    """Two buffers through SAELens's own shard writer, consolidated as its runner does."""
    n_seq, ctx, hook = 3, 8, "blocks.3.hook_resid_post"
    cfg = _Cfg()
    cfg.hook_name, cfg.d_in, cfg.n_seq_in_buffer, cfg.dtype = hook, D_IN, n_seq, "float32"
    runner = object.__new__(CacheActivationsRunner)
    runner.cfg, runner.context_size = cfg, ctx
    runner.features = sae_lens.cache_activations_runner.Features({
        hook: sae_lens.cache_activations_runner.Array2D(shape=(ctx, D_IN), dtype="float32"),
        "token_ids": sae_lens.cache_activations_runner.Sequence(
            sae_lens.cache_activations_runner.Value(dtype="int32"), length=ctx),
    })
    gen = torch.Generator().manual_seed(7)
    out = root / "saelens-cache"
    if out.exists():
        shutil.rmtree(out)
    flat_acts, flat_tokens = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(2):
            acts = torch.randn(n_seq * ctx, D_IN, generator=gen) * (1 + i)
            tokens = torch.randint(0, 1000, (n_seq * ctx,), generator=gen)
            flat_acts.append(acts)
            flat_tokens.append(tokens.to(torch.int32))
            shard = runner._create_shard((acts, tokens))
            shard.save_to_disk(f"{tmp}/shard_{i:05d}", num_shards=1)
        out.mkdir(parents=True)
        CacheActivationsRunner._consolidate_shards(Path(tmp), out, copy_files=True)
    save_file({"activations": torch.cat(flat_acts).contiguous(), "tokens": torch.cat(flat_tokens).contiguous()},
              root / "cache-flat.safetensors")


def write_npy(root):
    out = root / "npy"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((19, D_IN)).astype(np.float32)
    tokens = rng.integers(0, 1000, 19).astype(np.int32)
    np.save(out / "acts_f32.npy", x)
    np.save(out / "acts_f32.tokens.npy", tokens)
    np.save(out / "acts_f16.npy", x.astype(np.float16))
    np.save(out / "acts_rank3.npy", x[:, None, :])
    np.savez(out / "acts.npz", activations=x, tokens=tokens, other=np.zeros(3))
    bad = out / "bad"
    bad.mkdir()
    np.save(bad / "fortran.npy", np.asfortranarray(x))
    np.save(bad / "object.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    np.save(bad / "int.npy", tokens.reshape(19, 1))
    np.savez_compressed(bad / "compressed.npz", activations=x)
    save_file({"activations": torch.from_numpy(x), "tokens": torch.from_numpy(tokens)}, root / "npy-flat.safetensors")


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures")
    root.mkdir(parents=True, exist_ok=True)
    write_saelens(root)
    write_transcoders(root)
    write_cache(root)
    write_npy(root)
    print(f"sae-lens {sae_lens.__version__}, numpy {np.__version__}, torch {torch.__version__}")
