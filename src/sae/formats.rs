//! SAE checkpoint layouts the Python tools load as they are (see REFERENCE.md): sparsify
//! (`cfg.json` + `sae.safetensors`) and SAELens (`cfg.json` + `sae_weights.safetensors`
//! [+ `sparsity.safetensors`]). Loading detects the layout and validates every tensor.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};

use super::params::{Activation, SaeParams};
use crate::io::{write_json_atomic, write_safetensors, TensorOut};

/// SAELens architectures we can load.
pub const KNOWN_ARCHITECTURES: [&str; 3] = ["standard", "topk", "jumprelu"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Sparsify,
    SaeLens,
}

/// Writes `dir/cfg.json` and `dir/sae.safetensors` in sparsify's layout.
pub fn save_sparsify(dir: &Path, params: &SaeParams) -> anyhow::Result<()> {
    let k = params
        .k()
        .ok_or_else(|| anyhow!("sparsify's layout holds TopK SAEs only"))?;
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let (d, n) = (params.d_in, params.d_sae);
    write_safetensors(
        &dir.join("sae.safetensors"),
        &[
            TensorOut::f32("encoder.weight", &[n, d], &params.w_enc_transposed()),
            TensorOut::f32("encoder.bias", &[n], &params.b_enc),
            TensorOut::f32("W_dec", &[n, d], &params.w_dec),
            TensorOut::f32("b_dec", &[d], &params.b_dec),
        ],
        None,
    )?;
    let expansion_factor = if n % d == 0 { n / d } else { n.div_ceil(d) };
    let cfg = json!({
        "activation": "topk",
        "expansion_factor": expansion_factor,
        "normalize_decoder": true,
        "num_latents": n,
        "k": k,
        "multi_topk": false,
        "skip_connection": false,
        "transcode": false,
        "d_in": d,
    });
    write_json_atomic(&dir.join("cfg.json"), &cfg)
}

/// Writes `dir/cfg.json`, `dir/sae_weights.safetensors` and (when given) the log10 feature
/// density `dir/sparsity.safetensors` in SAELens' layout.
pub fn save_saelens(
    dir: &Path,
    params: &SaeParams,
    log10_density: Option<&[f32]>,
    metadata: Value,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let (d, n) = (params.d_in, params.d_sae);
    let mut tensors = vec![
        TensorOut::f32("W_enc", &[d, n], &params.w_enc),
        TensorOut::f32("W_dec", &[n, d], &params.w_dec),
        TensorOut::f32("b_enc", &[n], &params.b_enc),
        TensorOut::f32("b_dec", &[d], &params.b_dec),
    ];
    let mut cfg = json!({
        "d_in": d,
        "d_sae": n,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": true,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": metadata,
    });
    match &params.activation {
        Activation::TopK { k } => {
            cfg["architecture"] = json!("topk");
            cfg["k"] = json!(k);
            cfg["rescale_acts_by_decoder_norm"] = json!(false);
        }
        Activation::Relu => cfg["architecture"] = json!("standard"),
        Activation::JumpRelu { threshold } => {
            cfg["architecture"] = json!("jumprelu");
            tensors.push(TensorOut::f32("threshold", &[n], threshold));
        }
    }
    write_safetensors(&dir.join("sae_weights.safetensors"), &tensors, None)?;
    if let Some(density) = log10_density {
        write_safetensors(
            &dir.join("sparsity.safetensors"),
            &[TensorOut::f32("sparsity", &[n], density)],
            None,
        )?;
    }
    write_json_atomic(&dir.join("cfg.json"), &cfg)
}

/// A loaded SAE and where it came from.
pub struct LoadedSae {
    pub params: SaeParams,
    pub layout: Layout,
    pub dir: PathBuf,
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))
}

fn cfg_usize(cfg: &Value, key: &str, path: &Path) -> anyhow::Result<usize> {
    cfg.get(key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| anyhow!("{}: missing or non-integer \"{key}\"", path.display()))
}

/// Reads a float tensor (f32, f16 or bf16) of exactly `shape` as f32.
pub fn read_tensor_f32(
    st: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
    path: &Path,
) -> anyhow::Result<Vec<f32>> {
    let view = st
        .tensor(name)
        .map_err(|_| anyhow!("{}: missing tensor '{name}'", path.display()))?;
    if view.shape() != shape {
        bail!(
            "{}: tensor '{name}' has shape {:?}, expected {:?}",
            path.display(),
            view.shape(),
            shape
        );
    }
    let bytes = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => bail!(
            "{}: tensor '{name}' has dtype {other:?}; expected F32, F16 or BF16",
            path.display()
        ),
    })
}

fn read_safetensors(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))
}

fn parse<'a>(bytes: &'a [u8], path: &Path) -> anyhow::Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow!("{}: not a valid safetensors file: {e}", path.display()))
}

fn load_sparsify(dir: &Path) -> anyhow::Result<SaeParams> {
    let cfg_path = dir.join("cfg.json");
    let cfg = read_json(&cfg_path)?;
    let d = cfg_usize(&cfg, "d_in", &cfg_path)?;
    let activation = cfg
        .get("activation")
        .and_then(Value::as_str)
        .unwrap_or("topk");
    if activation != "topk" {
        bail!(
            "{}: sparsify activation \"{activation}\" is not supported (known: topk)",
            cfg_path.display()
        );
    }
    for flag in ["skip_connection", "transcode", "multi_topk"] {
        if flag != "multi_topk" && cfg.get(flag).and_then(Value::as_bool) == Some(true) {
            bail!("{}: \"{flag}\": true is not supported", cfg_path.display());
        }
    }
    let k = cfg_usize(&cfg, "k", &cfg_path)?;
    let num_latents = cfg.get("num_latents").and_then(Value::as_u64).unwrap_or(0) as usize;
    let n = if num_latents > 0 {
        num_latents
    } else {
        d * cfg_usize(&cfg, "expansion_factor", &cfg_path)?
    };
    let path = dir.join("sae.safetensors");
    let bytes = read_safetensors(&path)?;
    let st = parse(&bytes, &path)?;
    let encoder = read_tensor_f32(&st, "encoder.weight", &[n, d], &path)?;
    let mut params = SaeParams {
        d_in: d,
        d_sae: n,
        activation: Activation::TopK { k },
        w_enc: vec![],
        b_enc: read_tensor_f32(&st, "encoder.bias", &[n], &path)?,
        w_dec: read_tensor_f32(&st, "W_dec", &[n, d], &path)?,
        b_dec: read_tensor_f32(&st, "b_dec", &[d], &path)?,
    };
    let mut w_enc = vec![0.0f32; d * n];
    for i in 0..n {
        for c in 0..d {
            w_enc[c * n + i] = encoder[i * d + c];
        }
    }
    params.w_enc = w_enc;
    Ok(params)
}

fn load_saelens(dir: &Path) -> anyhow::Result<SaeParams> {
    let cfg_path = dir.join("cfg.json");
    let cfg = read_json(&cfg_path)?;
    let d = cfg_usize(&cfg, "d_in", &cfg_path)?;
    let n = cfg_usize(&cfg, "d_sae", &cfg_path)?;
    let architecture = cfg
        .get("architecture")
        .and_then(Value::as_str)
        .unwrap_or("standard");
    let path = dir.join("sae_weights.safetensors");
    let bytes = read_safetensors(&path)?;
    let st = parse(&bytes, &path)?;
    let activation = match architecture {
        "topk" => Activation::TopK {
            k: cfg_usize(&cfg, "k", &cfg_path)?,
        },
        "standard" => Activation::Relu,
        "jumprelu" => Activation::JumpRelu {
            threshold: read_tensor_f32(&st, "threshold", &[n], &path)?,
        },
        other => bail!(
            "{}: unknown architecture \"{other}\" (known: {})",
            cfg_path.display(),
            KNOWN_ARCHITECTURES.join(", ")
        ),
    };
    if cfg
        .get("rescale_acts_by_decoder_norm")
        .and_then(Value::as_bool)
        == Some(true)
    {
        bail!(
            "{}: \"rescale_acts_by_decoder_norm\": true is not supported",
            cfg_path.display()
        );
    }
    let w_enc = read_tensor_f32(&st, "W_enc", &[d, n], &path)?;
    let mut b_enc = read_tensor_f32(&st, "b_enc", &[n], &path)?;
    let b_dec = read_tensor_f32(&st, "b_dec", &[d], &path)?;
    // Our encoder always computes (x − b_dec)·W_enc + b_enc; an SAE that does not subtract
    // b_dec is the same map with b_enc + b_dec·W_enc.
    if cfg.get("apply_b_dec_to_input").and_then(Value::as_bool) == Some(false) {
        for c in 0..d {
            for i in 0..n {
                b_enc[i] += b_dec[c] * w_enc[c * n + i];
            }
        }
    }
    Ok(SaeParams {
        d_in: d,
        d_sae: n,
        activation,
        w_enc,
        b_enc,
        w_dec: read_tensor_f32(&st, "W_dec", &[n, d], &path)?,
        b_dec,
    })
}

/// Loads an SAE from a sparsify directory, a SAELens directory, or a `sae train` run
/// directory (its `sparsify/` or `saelens/` export), detecting the layout from the files.
pub fn load_sae(path: &Path) -> anyhow::Result<LoadedSae> {
    if !path.is_dir() {
        bail!(
            "{}: not a directory (expected an SAE checkpoint directory)",
            path.display()
        );
    }
    if path.join("sae.safetensors").is_file() {
        return Ok(LoadedSae {
            params: load_sparsify(path)?,
            layout: Layout::Sparsify,
            dir: path.to_path_buf(),
        });
    }
    if path.join("sae_weights.safetensors").is_file() {
        return Ok(LoadedSae {
            params: load_saelens(path)?,
            layout: Layout::SaeLens,
            dir: path.to_path_buf(),
        });
    }
    for sub in ["sparsify", "saelens"] {
        let inner = path.join(sub);
        if inner.join("cfg.json").is_file() {
            return load_sae(&inner);
        }
    }
    bail!(
        "{}: no SAE found (expected sae.safetensors, sae_weights.safetensors, or a run directory with sparsify/ or saelens/)",
        path.display()
    )
}
