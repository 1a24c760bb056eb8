//! sparsify's layout: `cfg.json` + `sae.safetensors` (`encoder.weight [d_sae, d_in]`, the
//! transpose of our W_enc, `encoder.bias`, `W_dec`, `b_dec`, and a skip-transcoder's
//! `W_skip [d_in, d_in]`). TopK only; its transcoders (`transcode: true`) write what they read
//! (d_out = d_in), and their encoder reads the input uncentred, as ours.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use super::provenance::Provenance;
use super::tensors::{cfg_usize, parse, read_json, read_safetensors, read_tensor_f32};
use crate::io::{write_json_atomic, write_safetensors, TensorOut};
use crate::sae::params::{Activation, InputNorm, SaeParams, Transcoding};

/// sparsify's `cfg.json`, as far as it changes the computation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparsifyConfig {
    pub d_in: usize,
    pub d_sae: usize,
    pub k: usize,
    /// `transcode`: a transcoder (the encoder reads x uncentred; the target is another
    /// activation of the same width).
    pub transcode: bool,
    /// `skip_connection`: W_skip, of a transcoder.
    pub skip_connection: bool,
}

impl SparsifyConfig {
    /// Reads `cfg.json`; a value we cannot compute exactly is refused, naming the field.
    pub fn read(path: &Path) -> anyhow::Result<SparsifyConfig> {
        let cfg = read_json(path)?;
        let d_in = cfg_usize(&cfg, "d_in", path)?;
        let activation = cfg
            .get("activation")
            .and_then(Value::as_str)
            .unwrap_or("topk");
        if activation != "topk" {
            bail!(
                "{}: sparsify activation \"{activation}\" is not supported (known: topk)",
                path.display()
            );
        }
        let flag = |name: &str| cfg.get(name).and_then(Value::as_bool) == Some(true);
        let (transcode, skip_connection) = (flag("transcode"), flag("skip_connection"));
        if skip_connection && !transcode {
            bail!(
                "{}: \"skip_connection\": true without \"transcode\": true is not supported (an SAE with a skip path)",
                path.display()
            );
        }
        let k = cfg_usize(&cfg, "k", path)?;
        let num_latents = cfg.get("num_latents").and_then(Value::as_u64).unwrap_or(0) as usize;
        let d_sae = if num_latents > 0 {
            num_latents
        } else {
            d_in * cfg_usize(&cfg, "expansion_factor", path)?
        };
        Ok(SparsifyConfig {
            d_in,
            d_sae,
            k,
            transcode,
            skip_connection,
        })
    }

    fn json(&self) -> Value {
        let (d, n) = (self.d_in, self.d_sae);
        let expansion_factor = if n % d == 0 { n / d } else { n.div_ceil(d) };
        json!({
            "activation": "topk",
            "expansion_factor": expansion_factor,
            // Our transcoders' decoders are not held at unit norm (nor are sparsify's).
            "normalize_decoder": !self.transcode,
            "num_latents": n,
            "k": self.k,
            "multi_topk": false,
            "skip_connection": self.skip_connection,
            "transcode": self.transcode,
            "d_in": d,
        })
    }
}

/// Writes `dir/cfg.json` and `dir/sae.safetensors` in sparsify's layout.
pub fn save_sparsify(dir: &Path, params: &SaeParams) -> anyhow::Result<()> {
    let k = params
        .k()
        .ok_or_else(|| anyhow!("sparsify's layout holds TopK SAEs only"))?;
    let (d, n) = (params.d_in, params.d_sae);
    if params.d_out() != d {
        bail!(
            "sparsify's transcoders write what they read: this one reads {d} values and writes {}; use SAELens' layout",
            params.d_out()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let encoder = params.w_enc_transposed();
    let mut tensors = vec![
        TensorOut::f32("encoder.weight", &[n, d], &encoder),
        TensorOut::f32("encoder.bias", &[n], &params.b_enc),
        TensorOut::f32("W_dec", &[n, d], &params.w_dec),
        TensorOut::f32("b_dec", &[d], &params.b_dec),
    ];
    if let Some(w_skip) = params.w_skip() {
        tensors.push(TensorOut::f32("W_skip", &[d, d], w_skip));
    }
    write_safetensors(&dir.join("sae.safetensors"), &tensors, None)?;
    let cfg = SparsifyConfig {
        d_in: d,
        d_sae: n,
        k,
        transcode: params.is_transcoder(),
        skip_connection: params.w_skip().is_some(),
    };
    write_json_atomic(&dir.join("cfg.json"), &cfg.json())
}

/// Loads a sparsify SAE directory.
pub fn load_sparsify(dir: &Path) -> anyhow::Result<(SaeParams, Provenance)> {
    let cfg = SparsifyConfig::read(&dir.join("cfg.json"))?;
    let (d, n, k) = (cfg.d_in, cfg.d_sae, cfg.k);
    let path = dir.join("sae.safetensors");
    let bytes = read_safetensors(&path)?;
    let st = parse(&bytes, &path)?;
    let encoder = read_tensor_f32(&st, "encoder.weight", &[n, d], &path)?;
    let mut w_enc = vec![0.0f32; d * n];
    for i in 0..n {
        for c in 0..d {
            w_enc[c * n + i] = encoder[i * d + c];
        }
    }
    let params = SaeParams {
        input_norm: InputNorm::None,
        d_in: d,
        d_sae: n,
        activation: Activation::TopK { k },
        w_enc,
        b_enc: read_tensor_f32(&st, "encoder.bias", &[n], &path)?,
        w_dec: read_tensor_f32(&st, "W_dec", &[n, d], &path)?,
        b_dec: read_tensor_f32(&st, "b_dec", &[d], &path)?,
        transcoder: match cfg.transcode {
            false => None,
            true => Some(Transcoding {
                d_out: d,
                w_skip: match cfg.skip_connection {
                    true => Some(read_tensor_f32(&st, "W_skip", &[d, d], &path)?),
                    false => None,
                },
            }),
        },
    };
    let provenance = Provenance {
        layout: "sparsify",
        architecture: "topk",
        transcoder: cfg.transcode,
        skip: cfg.skip_connection,
        d_in: d,
        d_out: d,
        d_sae: n,
        k: Some(k),
        normalize_activations: "none".into(),
        model_name: run_model_name(dir),
        dtype: Some("float32".into()),
        ..Provenance::default()
    };
    Ok((params, provenance))
}

/// The model sparsify's run directory (one level up) names.
fn run_model_name(dir: &Path) -> Option<String> {
    let run_cfg = dir
        .parent()
        .map(|p| p.join("config.json"))
        .filter(|p| p.is_file())
        .and_then(|p| read_json(&p).ok())?;
    run_cfg
        .get("model")
        .and_then(Value::as_str)
        .map(String::from)
}
