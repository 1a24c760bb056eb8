//! SAE checkpoint layouts the Python tools load as they are (see REFERENCE.md): sparsify
//! (`cfg.json` + `sae.safetensors`) and SAELens (`cfg.json` + `sae_weights.safetensors`
//! [+ `sparsity.safetensors`]). Loading detects the layout and validates every tensor.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use safetensors::{Dtype, SafeTensors};
use serde::Serialize;
use serde_json::{json, Value};

use super::params::{Activation, InputNorm, SaeParams};
use crate::io::{write_json_atomic, write_safetensors, TensorOut};

/// SAELens architectures we can load.
pub const KNOWN_ARCHITECTURES: [&str; 4] = ["standard", "topk", "jumprelu", "gated"];

/// SAELens `normalize_activations` values we compute exactly.
pub const KNOWN_NORMALIZATIONS: [&str; 5] = [
    "none",
    "constant_norm_rescale",
    "layer_norm",
    "expected_average_only_in",
    "covariance_whitening",
];

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
        TensorOut::f32("b_dec", &[d], &params.b_dec),
    ];
    if !matches!(params.activation, Activation::Gated { .. }) {
        tensors.push(TensorOut::f32("b_enc", &[n], &params.b_enc));
    }
    let mut cfg = json!({
        "d_in": d,
        "d_sae": n,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": true,
        "normalize_activations": match params.input_norm {
            InputNorm::None => "none",
            InputNorm::ConstantNormRescale => "constant_norm_rescale",
            InputNorm::LayerNorm => "layer_norm",
        },
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
        Activation::Gated {
            b_gate,
            r_mag,
            b_mag,
        } => {
            cfg["architecture"] = json!("gated");
            tensors.push(TensorOut::f32("b_gate", &[n], b_gate));
            tensors.push(TensorOut::f32("r_mag", &[n], r_mag));
            tensors.push(TensorOut::f32("b_mag", &[n], b_mag));
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

/// What a loaded SAE is and where it came from, recorded in every command's outputs.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Provenance {
    /// The directory the weights were read from.
    pub path: String,
    /// `sparsify` or `saelens`.
    pub layout: &'static str,
    /// The sparsify hookpoint (subdirectory) chosen with `--hookpoint`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hookpoint: Option<String>,
    /// SAELens architecture name (`topk`, `standard`, `jumprelu`, `gated`).
    pub architecture: &'static str,
    pub d_in: usize,
    pub d_sae: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// `normalize_activations` as the checkpoint states it.
    pub normalize_activations: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_size: Option<u64>,
    /// The weights' dtype as stored; computation is in f32.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// What was folded into the weights on load (each exact; see README).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub folded: Vec<String>,
}

impl Provenance {
    /// One line for a terminal: what, from where, for which model and hook.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "{} ({} layout, {}{}, d_in {}, d_sae {}, normalize_activations {})",
            self.path,
            self.layout,
            self.architecture,
            self.k.map_or(String::new(), |k| format!(" k {k}")),
            self.d_in,
            self.d_sae,
            self.normalize_activations
        );
        if let Some(hookpoint) = &self.hookpoint {
            line.push_str(&format!(", hookpoint {hookpoint}"));
        }
        fn known(v: &Option<String>) -> Option<&str> {
            v.as_deref().filter(|v| !v.is_empty() && *v != "unknown")
        }
        if let Some(model) = known(&self.model_name) {
            line.push_str(&format!(", model {model}"));
        }
        if let Some(hook) = known(&self.hook_name) {
            line.push_str(&format!(", hook {hook}"));
        }
        if let Some(context) = self.context_size.filter(|&c| c > 0) {
            line.push_str(&format!(", context {context}"));
        }
        line
    }
}

/// A loaded SAE and where it came from.
pub struct LoadedSae {
    pub params: SaeParams,
    pub layout: Layout,
    pub dir: PathBuf,
    pub provenance: Provenance,
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
    read_tensor_f64(st, name, shape, path).map(|v| v.into_iter().map(|x| x as f32).collect())
}

/// Reads a float tensor (f64, f32, f16 or bf16) of exactly `shape` as f64.
fn read_tensor_f64(
    st: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
    path: &Path,
) -> anyhow::Result<Vec<f64>> {
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
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect(),
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f64::from(half::f16::from_le_bytes([b[0], b[1]]).to_f32()))
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| f64::from(half::bf16::from_le_bytes([b[0], b[1]]).to_f32()))
            .collect(),
        other => bail!(
            "{}: tensor '{name}' has dtype {other:?}; expected F64, F32, F16 or BF16",
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

fn load_sparsify(dir: &Path) -> anyhow::Result<(SaeParams, Provenance)> {
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
    for flag in ["skip_connection", "transcode"] {
        if cfg.get(flag).and_then(Value::as_bool) == Some(true) {
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
        input_norm: InputNorm::None,
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
    // sparsify's run directory (one level up) names the model it was trained on.
    let run_cfg = dir
        .parent()
        .map(|p| p.join("config.json"))
        .filter(|p| p.is_file())
        .and_then(|p| read_json(&p).ok());
    let model_name = run_cfg
        .as_ref()
        .and_then(|c| c.get("model"))
        .and_then(Value::as_str)
        .map(String::from);
    let provenance = Provenance {
        layout: "sparsify",
        architecture: "topk",
        d_in: d,
        d_sae: n,
        k: Some(k),
        normalize_activations: "none".into(),
        model_name,
        dtype: Some("float32".into()),
        ..Provenance::default()
    };
    Ok((params, provenance))
}

fn cfg_str<'a>(cfg: &'a Value, key: &str) -> Option<&'a str> {
    cfg.get(key).and_then(Value::as_str)
}

/// Σ_c row[c]·w_enc[c, i] for every latent i (b_dec·W_enc), in f64.
fn times_w_enc(row: &[f32], w_enc: &[f32], n: usize) -> Vec<f64> {
    let mut out = vec![0.0f64; n];
    for (c, &v) in row.iter().enumerate() {
        let v = f64::from(v);
        for (o, &w) in out.iter_mut().zip(&w_enc[c * n..(c + 1) * n]) {
            *o += v * f64::from(w);
        }
    }
    out
}

/// SAELens' activation scaler beside a training checkpoint (`activation_scaler.json`, and
/// `activation_whitening.safetensors` when it whitens).
struct Scaler {
    scaling_factor: Option<f64>,
    /// (mean [d], matrix [d, d], inverse_matrix [d, d]): z = (x − mean)·M, x = z·M⁻¹ + mean.
    whitening: Option<(Vec<f64>, Vec<f64>, Vec<f64>)>,
}

fn read_scaler(dir: &Path, d: usize) -> anyhow::Result<Option<Scaler>> {
    let path = dir.join("activation_scaler.json");
    if !path.is_file() {
        return Ok(None);
    }
    let json = read_json(&path)?;
    let scaling_factor = match json.get("scaling_factor") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|s| s.is_finite() && *s > 0.0)
                .ok_or_else(|| {
                    anyhow!(
                        "{}: \"scaling_factor\" {v} is not a positive number",
                        path.display()
                    )
                })?,
        ),
    };
    let whitening_path = dir.join("activation_whitening.safetensors");
    let has_whitening = json.get("has_whitening").and_then(Value::as_bool) != Some(false);
    let whitening = if has_whitening && whitening_path.is_file() {
        let bytes = read_safetensors(&whitening_path)?;
        let st = parse(&bytes, &whitening_path)?;
        Some((
            read_tensor_f64(&st, "mean", &[d], &whitening_path)?,
            read_tensor_f64(&st, "matrix", &[d, d], &whitening_path)?,
            read_tensor_f64(&st, "inverse_matrix", &[d, d], &whitening_path)?,
        ))
    } else {
        None
    };
    Ok(Some(Scaler {
        scaling_factor,
        whitening,
    }))
}

/// The weights of a SAELens SAE while the loader folds into them, in f64.
struct Folding {
    d: usize,
    n: usize,
    w_enc: Vec<f64>,
    w_dec: Vec<f64>,
    b_dec: Vec<f64>,
}

impl Folding {
    /// A model that reads z = (x − mean)·M and writes x̂ = ẑ·M⁻¹ + mean, as one on x:
    /// W_enc ← M·W_enc, W_dec ← W_dec·M⁻¹, b_dec ← b_dec·M⁻¹ + mean (SAELens'
    /// `fold_activation_whitening`, for an encoder that subtracts b_dec).
    fn whitening(&mut self, mean: &[f64], matrix: &[f64], inverse: &[f64]) {
        let (d, n) = (self.d, self.n);
        let mut w_enc = vec![0.0f64; d * n];
        for r in 0..d {
            let out = &mut w_enc[r * n..(r + 1) * n];
            for c in 0..d {
                let m = matrix[r * d + c];
                for (o, &w) in out.iter_mut().zip(&self.w_enc[c * n..(c + 1) * n]) {
                    *o += m * w;
                }
            }
        }
        let mut w_dec = vec![0.0f64; n * d];
        for i in 0..n {
            let out = &mut w_dec[i * d..(i + 1) * d];
            for c in 0..d {
                let w = self.w_dec[i * d + c];
                for (o, &m) in out.iter_mut().zip(&inverse[c * d..(c + 1) * d]) {
                    *o += w * m;
                }
            }
        }
        let b_dec = (0..d)
            .map(|j| {
                (0..d)
                    .map(|c| self.b_dec[c] * inverse[c * d + j])
                    .sum::<f64>()
                    + mean[j]
            })
            .collect();
        (self.w_enc, self.w_dec, self.b_dec) = (w_enc, w_dec, b_dec);
    }

    /// A model that reads x·s and writes x̂·s, as one on x (SAELens'
    /// `fold_activation_norm_scaling_factor`): W_enc ← s·W_enc, W_dec ← W_dec/s, b_dec ← b_dec/s.
    fn scale(&mut self, s: f64) {
        self.w_enc.iter_mut().for_each(|v| *v *= s);
        self.w_dec.iter_mut().for_each(|v| *v /= s);
        self.b_dec.iter_mut().for_each(|v| *v /= s);
    }
}

fn to_f32(v: Vec<f64>) -> Vec<f32> {
    v.into_iter().map(|x| x as f32).collect()
}

fn load_saelens(dir: &Path) -> anyhow::Result<(SaeParams, Provenance)> {
    let cfg_path = dir.join("cfg.json");
    let cfg = read_json(&cfg_path)?;
    let d = cfg_usize(&cfg, "d_in", &cfg_path)?;
    let n = cfg_usize(&cfg, "d_sae", &cfg_path)?;
    let field_error = |field: &str, value: &str, known: &str| {
        anyhow!(
            "{}: \"{field}\": {value} is not supported (known: {known})",
            cfg_path.display()
        )
    };
    let mut architecture = cfg_str(&cfg, "architecture").unwrap_or("standard");
    let mut k_from_kwargs = None;
    // SAELens before 5 kept the activation in "activation_fn_str" of a "standard" SAE.
    if let Some(activation) = cfg_str(&cfg, "activation_fn_str").or(cfg_str(&cfg, "activation_fn"))
    {
        match (architecture, activation) {
            (_, "relu") => {}
            ("standard", "topk") => {
                architecture = "topk";
                k_from_kwargs = cfg
                    .get("activation_fn_kwargs")
                    .and_then(|kw| kw.get("k"))
                    .and_then(Value::as_u64)
                    .map(|k| k as usize);
            }
            (_, other) => {
                return Err(field_error(
                    "activation_fn_str",
                    &format!("\"{other}\""),
                    "relu, topk",
                ))
            }
        }
    }
    if !KNOWN_ARCHITECTURES.contains(&architecture) {
        bail!(
            "{}: unknown architecture \"{architecture}\" (known: {})",
            cfg_path.display(),
            KNOWN_ARCHITECTURES.join(", ")
        );
    }
    if cfg
        .get("finetuning_scaling_factor")
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Err(field_error("finetuning_scaling_factor", "true", "false"));
    }
    // hook_z SAEs read the heads' outputs flattened to one row, which is what a shard holds.
    match cfg_str(&cfg, "reshape_activations").unwrap_or("none") {
        "none" | "hook_z" => {}
        other => {
            return Err(field_error(
                "reshape_activations",
                &format!("\"{other}\""),
                "none, hook_z",
            ))
        }
    }
    let normalize = cfg_str(&cfg, "normalize_activations").unwrap_or("none");
    if !KNOWN_NORMALIZATIONS.contains(&normalize) {
        return Err(field_error(
            "normalize_activations",
            &format!("\"{normalize}\""),
            &KNOWN_NORMALIZATIONS.join(", "),
        ));
    }
    let rescale = match cfg.get("rescale_acts_by_decoder_norm") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(field_error(
                "rescale_acts_by_decoder_norm",
                &other.to_string(),
                "true, false",
            ))
        }
    };
    if rescale && architecture != "topk" {
        return Err(field_error(
            "rescale_acts_by_decoder_norm",
            &format!("true with architecture \"{architecture}\""),
            "true for topk only",
        ));
    }
    let apply_b_dec = match cfg.get("apply_b_dec_to_input") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(field_error(
                "apply_b_dec_to_input",
                &other.to_string(),
                "true, false",
            ))
        }
    };

    let path = dir.join("sae_weights.safetensors");
    let bytes = read_safetensors(&path)?;
    let st = parse(&bytes, &path)?;
    let vector = |name: &str| read_tensor_f64(&st, name, &[n], &path);
    let mut weights = Folding {
        d,
        n,
        w_enc: read_tensor_f64(&st, "W_enc", &[d, n], &path)?,
        w_dec: read_tensor_f64(&st, "W_dec", &[n, d], &path)?,
        b_dec: read_tensor_f64(&st, "b_dec", &[d], &path)?,
    };
    let mut folded = Vec::new();
    // Encoder biases, in the form our encoder computes: (x − b_dec)·W_enc + bias.
    let mut b_enc = if architecture == "gated" {
        vec![0.0; n]
    } else {
        vector("b_enc")?
    };
    let mut gate = if architecture == "gated" {
        Some((vector("b_gate")?, vector("r_mag")?, vector("b_mag")?))
    } else {
        None
    };
    if rescale {
        // TopK of h·‖W_dec,i‖ decoded through f/‖W_dec,i‖ is TopK of h' = h·‖W_dec,i‖ decoded
        // through unit rows: fold the norms into W_enc and b_enc (SAELens' fold_W_dec_norm).
        for (i, (row, bias)) in weights
            .w_dec
            .chunks_exact_mut(d)
            .zip(&mut b_enc)
            .enumerate()
        {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|v| *v /= norm);
                *bias *= norm;
                for c in 0..d {
                    weights.w_enc[c * n + i] *= norm;
                }
            }
        }
        folded.push(
            "rescale_acts_by_decoder_norm: decoder row norms folded into W_enc and b_enc".into(),
        );
    }
    if !apply_b_dec {
        // x·W_enc + b equals (x − b_dec)·W_enc + (b + b_dec·W_enc).
        let b_dec32: Vec<f32> = weights.b_dec.iter().map(|&v| v as f32).collect();
        let w_enc32: Vec<f32> = weights.w_enc.iter().map(|&v| v as f32).collect();
        let shift = times_w_enc(&b_dec32, &w_enc32, n);
        match &mut gate {
            Some((b_gate, r_mag, b_mag)) => {
                for i in 0..n {
                    b_gate[i] += shift[i];
                    b_mag[i] += r_mag[i].exp() * shift[i];
                }
            }
            None => b_enc.iter_mut().zip(&shift).for_each(|(b, s)| *b += s),
        }
        folded
            .push("apply_b_dec_to_input: false, as b_dec·W_enc added to the encoder biases".into());
    }
    let input_norm = match normalize {
        "constant_norm_rescale" => InputNorm::ConstantNormRescale,
        "layer_norm" => InputNorm::LayerNorm,
        "none" => InputNorm::None,
        _ => {
            // A training checkpoint: the scaler that trained it lies beside the weights.
            let scaler = read_scaler(dir, d)?;
            let needs = if normalize == "expected_average_only_in" {
                "the scaling factor it was trained with (activation_scaler.json with a \"scaling_factor\")"
            } else {
                "the whitening it was trained with (activation_scaler.json and activation_whitening.safetensors)"
            };
            let usable = scaler.filter(|s| {
                if normalize == "expected_average_only_in" {
                    s.scaling_factor.is_some()
                } else {
                    s.whitening.is_some()
                }
            });
            let Some(scaler) = usable else {
                bail!(
                    "{}: \"normalize_activations\": \"{normalize}\" needs {needs}, which {} does not hold",
                    cfg_path.display(),
                    dir.display()
                );
            };
            // SAELens evaluates such a checkpoint on whiten(x·s) and unscales the output:
            // fold the whitening (next to the SAE) first, then the scale.
            if let Some((mean, matrix, inverse)) = &scaler.whitening {
                weights.whitening(mean, matrix, inverse);
                folded.push("covariance whitening from activation_whitening.safetensors folded into W_enc, W_dec, b_dec".into());
            }
            if let Some(s) = scaler.scaling_factor {
                weights.scale(s);
                folded.push(format!("scaling factor {s} from activation_scaler.json folded into W_enc, W_dec, b_dec"));
            }
            InputNorm::None
        }
    };
    let (activation, k) = match architecture {
        "topk" => {
            let k = match k_from_kwargs {
                Some(k) => k,
                None => cfg_usize(&cfg, "k", &cfg_path)?,
            };
            (Activation::TopK { k }, Some(k))
        }
        "standard" => (Activation::Relu, None),
        "jumprelu" => (
            Activation::JumpRelu {
                threshold: to_f32(vector("threshold")?),
            },
            None,
        ),
        _ => {
            let (b_gate, r_mag, b_mag) = gate.take().unwrap_or_default();
            (
                Activation::Gated {
                    b_gate: to_f32(b_gate),
                    r_mag: to_f32(r_mag),
                    b_mag: to_f32(b_mag),
                },
                None,
            )
        }
    };
    let metadata = cfg.get("metadata").cloned().unwrap_or(Value::Null);
    let meta_str = |key: &str| {
        metadata
            .get(key)
            .or_else(|| cfg.get(key))
            .and_then(Value::as_str)
            .map(String::from)
    };
    let provenance = Provenance {
        layout: "saelens",
        architecture: activation.name(),
        d_in: d,
        d_sae: n,
        k,
        normalize_activations: normalize.to_string(),
        model_name: meta_str("model_name"),
        hook_name: meta_str("hook_name"),
        context_size: metadata
            .get("context_size")
            .or_else(|| cfg.get("context_size"))
            .and_then(Value::as_u64),
        dtype: cfg_str(&cfg, "dtype").map(String::from),
        folded,
        ..Provenance::default()
    };
    let params = SaeParams {
        input_norm,
        d_in: d,
        d_sae: n,
        activation,
        w_enc: to_f32(weights.w_enc),
        b_enc: to_f32(b_enc),
        w_dec: to_f32(weights.w_dec),
        b_dec: to_f32(weights.b_dec),
    };
    Ok((params, provenance))
}

/// The hookpoints of a sparsify save directory: subdirectories holding an SAE.
pub fn hookpoints(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            let p = e.path();
            p.join("cfg.json").is_file()
                && (p.join("sae.safetensors").is_file()
                    || p.join("sae_weights.safetensors").is_file())
        })
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .collect();
    found.sort();
    found
}

/// Loads an SAE from a sparsify directory, a SAELens directory, or a `sae train` run
/// directory (its `sparsify/` or `saelens/` export), detecting the layout from the files.
pub fn load_sae(path: &Path) -> anyhow::Result<LoadedSae> {
    load_sae_at(path, None)
}

/// As [`load_sae`]; `hookpoint` picks one SAE of a sparsify run saved for several hookpoints
/// (its subdirectory), which a directory holding several requires.
pub fn load_sae_at(path: &Path, hookpoint: Option<&str>) -> anyhow::Result<LoadedSae> {
    if !path.is_dir() {
        bail!(
            "{}: not a directory (expected an SAE checkpoint directory)",
            path.display()
        );
    }
    if let Some(name) = hookpoint {
        let inner = path.join(name);
        let present = hookpoints(path);
        if !present.iter().any(|h| h == name) {
            bail!(
                "{}: no hookpoint \"{name}\" (hookpoints here: {})",
                path.display(),
                if present.is_empty() {
                    "none".to_string()
                } else {
                    present.join(", ")
                }
            );
        }
        let mut loaded = load_sae_at(&inner, None)?;
        loaded.provenance.hookpoint = Some(name.to_string());
        return Ok(loaded);
    }
    let (params, layout, mut provenance) = if path.join("sae.safetensors").is_file() {
        let (params, provenance) = load_sparsify(path)?;
        (params, Layout::Sparsify, provenance)
    } else if path.join("sae_weights.safetensors").is_file() {
        let (params, provenance) = load_saelens(path)?;
        (params, Layout::SaeLens, provenance)
    } else {
        for sub in ["sparsify", "saelens"] {
            let inner = path.join(sub);
            if inner.join("cfg.json").is_file() {
                return load_sae_at(&inner, None);
            }
        }
        let present = hookpoints(path);
        if !present.is_empty() {
            bail!(
                "{}: holds SAEs for several hookpoints ({}); choose one with --hookpoint",
                path.display(),
                present.join(", ")
            );
        }
        bail!(
            "{}: no SAE found (expected sae.safetensors, sae_weights.safetensors, a run directory with sparsify/ or saelens/, or hookpoint subdirectories)",
            path.display()
        )
    };
    provenance.path = path.display().to_string();
    Ok(LoadedSae {
        params,
        layout,
        dir: path.to_path_buf(),
        provenance,
    })
}
