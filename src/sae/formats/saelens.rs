//! SAELens' layout: `cfg.json` + `sae_weights.safetensors` (+ `sparsity.safetensors`), every
//! architecture we compute exactly (standard, topk, jumprelu, gated, and the transcoders
//! transcoder, skip_transcoder, jumprelu_transcoder, jumprelu_skip_transcoder, whose cfg adds
//! `d_out` and weights `W_skip [d_out, d_in]`; sae_lens/saes/transcoder.py), with the configuration
//! typed: a value that would change the computation and that we do not compute is refused,
//! naming the field. Scalers, whitening, decoder-norm rescaling and `apply_b_dec_to_input`
//! are folded into the weights (super::fold), exactly.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};

use super::fold::{read_scaler, times_w_enc, to_f32, Folding};
use super::provenance::Provenance;
use super::tensors::{cfg_str, cfg_usize, parse, read_json, read_safetensors, read_tensor_f64};
use crate::io::{write_json_atomic, write_safetensors, TensorOut};
use crate::sae::params::{Activation, InputNorm, SaeParams, Transcoding};

/// SAELens architectures we can load.
pub const KNOWN_ARCHITECTURES: [&str; 8] = [
    "standard",
    "topk",
    "jumprelu",
    "gated",
    "transcoder",
    "skip_transcoder",
    "jumprelu_transcoder",
    "jumprelu_skip_transcoder",
];

/// SAELens `normalize_activations` values we compute exactly.
pub const KNOWN_NORMALIZATIONS: [&str; 5] = [
    "none",
    "constant_norm_rescale",
    "layer_norm",
    "expected_average_only_in",
    "covariance_whitening",
];

/// What the SAE computes with its weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaeLensArchitecture {
    Standard,
    TopK { k: usize },
    JumpRelu,
    Gated,
}

/// `normalize_activations`: per row at run time, or a training checkpoint's scaler beside it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Normalization {
    None,
    ConstantNormRescale,
    LayerNorm,
    ExpectedAverageOnlyIn,
    CovarianceWhitening,
}

/// What a transcoder's `cfg.json` adds: the decoder's width, and whether W_skip is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaeLensTranscoder {
    pub d_out: usize,
    pub skip: bool,
}

/// SAELens' `cfg.json`, as far as it changes the computation or says what the SAE is.
#[derive(Clone, Debug)]
pub struct SaeLensConfig {
    pub d_in: usize,
    pub d_sae: usize,
    pub architecture: SaeLensArchitecture,
    /// A transcoder (its architecture names one): what it adds.
    pub transcoder: Option<SaeLensTranscoder>,
    pub normalization: Normalization,
    /// `normalize_activations` as the file states it.
    pub normalization_name: String,
    pub rescale_acts_by_decoder_norm: bool,
    pub apply_b_dec_to_input: bool,
    /// `metadata` (or the top level, in older files): model, hook, context, dtype.
    pub model_name: Option<String>,
    pub hook_name: Option<String>,
    /// A transcoder's target hook (`metadata.hook_name_out`, as we write it).
    pub hook_name_out: Option<String>,
    pub context_size: Option<u64>,
    pub dtype: Option<String>,
}

/// An error naming a field whose value we do not compute.
fn field_error(path: &Path, field: &str, value: &str, known: &str) -> anyhow::Error {
    anyhow!(
        "{}: \"{field}\": {value} is not supported (known: {known})",
        path.display()
    )
}

/// A field that is absent, null or a boolean (absent and null read as `default`).
fn cfg_bool(cfg: &Value, field: &str, default: bool, path: &Path) -> anyhow::Result<bool> {
    match cfg.get(field) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(field_error(path, field, &other.to_string(), "true, false")),
    }
}

impl SaeLensConfig {
    /// Reads and checks `cfg.json`.
    pub fn read(path: &Path) -> anyhow::Result<SaeLensConfig> {
        let cfg = read_json(path)?;
        let d_in = cfg_usize(&cfg, "d_in", path)?;
        let d_sae = cfg_usize(&cfg, "d_sae", path)?;
        let (architecture, transcoder) = match transcoder_architecture(&cfg) {
            Some((architecture, skip)) => {
                let d_out = cfg_usize(&cfg, "d_out", path)?;
                (architecture, Some(SaeLensTranscoder { d_out, skip }))
            }
            None => (architecture(&cfg, path)?, None),
        };
        if cfg
            .get("finetuning_scaling_factor")
            .and_then(Value::as_bool)
            == Some(true)
        {
            return Err(field_error(
                path,
                "finetuning_scaling_factor",
                "true",
                "false",
            ));
        }
        // hook_z SAEs read the heads' outputs flattened to one row, which is what a shard holds.
        match cfg_str(&cfg, "reshape_activations").unwrap_or("none") {
            "none" | "hook_z" => {}
            other => {
                let value = format!("\"{other}\"");
                return Err(field_error(
                    path,
                    "reshape_activations",
                    &value,
                    "none, hook_z",
                ));
            }
        }
        let (normalization, normalization_name) = normalization(&cfg, path)?;
        let rescale = cfg_bool(&cfg, "rescale_acts_by_decoder_norm", false, path)?;
        if rescale && !matches!(architecture, SaeLensArchitecture::TopK { .. }) {
            let value = format!("true with architecture \"{}\"", name(architecture));
            let known = "true for topk only";
            return Err(field_error(
                path,
                "rescale_acts_by_decoder_norm",
                &value,
                known,
            ));
        }
        // A transcoder's input is never centred by b_dec (SAELens refuses true), and only its
        // input would be normalised: neither is a computation we would reproduce.
        let apply_b_dec_to_input = match transcoder {
            None => cfg_bool(&cfg, "apply_b_dec_to_input", true, path)?,
            Some(_) if cfg_bool(&cfg, "apply_b_dec_to_input", false, path)? => {
                return Err(field_error(
                    path,
                    "apply_b_dec_to_input",
                    "true",
                    "false for transcoders",
                ))
            }
            Some(_) => false,
        };
        if transcoder.is_some() && normalization != Normalization::None {
            let value = format!("\"{normalization_name}\"");
            return Err(field_error(
                path,
                "normalize_activations",
                &value,
                "\"none\" for transcoders",
            ));
        }
        let metadata = cfg.get("metadata").cloned().unwrap_or(Value::Null);
        let meta = |key: &str| metadata.get(key).or_else(|| cfg.get(key));
        let meta_str = |key: &str| meta(key).and_then(Value::as_str).map(String::from);
        Ok(SaeLensConfig {
            d_in,
            d_sae,
            architecture,
            transcoder,
            normalization,
            normalization_name,
            rescale_acts_by_decoder_norm: rescale,
            apply_b_dec_to_input,
            model_name: meta_str("model_name"),
            hook_name: meta_str("hook_name"),
            hook_name_out: meta_str("hook_name_out"),
            context_size: meta("context_size").and_then(Value::as_u64),
            dtype: cfg_str(&cfg, "dtype").map(String::from),
        })
    }
}

/// SAELens' name for an architecture.
fn name(architecture: SaeLensArchitecture) -> &'static str {
    match architecture {
        SaeLensArchitecture::Standard => "standard",
        SaeLensArchitecture::TopK { .. } => "topk",
        SaeLensArchitecture::JumpRelu => "jumprelu",
        SaeLensArchitecture::Gated => "gated",
    }
}

/// A transcoder's architecture: what it computes and whether it has W_skip.
fn transcoder_architecture(cfg: &Value) -> Option<(SaeLensArchitecture, bool)> {
    Some(match cfg_str(cfg, "architecture")? {
        "transcoder" => (SaeLensArchitecture::Standard, false),
        "skip_transcoder" => (SaeLensArchitecture::Standard, true),
        "jumprelu_transcoder" => (SaeLensArchitecture::JumpRelu, false),
        "jumprelu_skip_transcoder" => (SaeLensArchitecture::JumpRelu, true),
        _ => return None,
    })
}

/// `architecture` (default `standard`), with SAELens < 5's `activation_fn_str` of a
/// `standard` SAE read as the activation it names.
fn architecture(cfg: &Value, path: &Path) -> anyhow::Result<SaeLensArchitecture> {
    let mut architecture = cfg_str(cfg, "architecture").unwrap_or("standard");
    let mut k_from_kwargs = None;
    if let Some(activation) = cfg_str(cfg, "activation_fn_str").or(cfg_str(cfg, "activation_fn")) {
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
                let value = format!("\"{other}\"");
                return Err(field_error(path, "activation_fn_str", &value, "relu, topk"));
            }
        }
    }
    Ok(match architecture {
        "standard" => SaeLensArchitecture::Standard,
        "jumprelu" => SaeLensArchitecture::JumpRelu,
        "gated" => SaeLensArchitecture::Gated,
        "topk" => SaeLensArchitecture::TopK {
            k: match k_from_kwargs {
                Some(k) => k,
                None => cfg_usize(cfg, "k", path)?,
            },
        },
        other => bail!(
            "{}: unknown architecture \"{other}\" (known: {})",
            path.display(),
            KNOWN_ARCHITECTURES.join(", ")
        ),
    })
}

fn normalization(cfg: &Value, path: &Path) -> anyhow::Result<(Normalization, String)> {
    let name = cfg_str(cfg, "normalize_activations").unwrap_or("none");
    let normalization = match name {
        "none" => Normalization::None,
        "constant_norm_rescale" => Normalization::ConstantNormRescale,
        "layer_norm" => Normalization::LayerNorm,
        "expected_average_only_in" => Normalization::ExpectedAverageOnlyIn,
        "covariance_whitening" => Normalization::CovarianceWhitening,
        other => {
            let value = format!("\"{other}\"");
            let known = KNOWN_NORMALIZATIONS.join(", ");
            return Err(field_error(path, "normalize_activations", &value, &known));
        }
    };
    Ok((normalization, name.to_string()))
}

/// Writes `dir/cfg.json`, `dir/sae_weights.safetensors` and (when given) the log10 feature
/// density `dir/sparsity.safetensors` in SAELens' layout.
pub fn save_saelens(
    dir: &Path,
    params: &SaeParams,
    log10_density: Option<&[f32]>,
    metadata: Value,
) -> anyhow::Result<()> {
    let (d, d_out, n) = (params.d_in, params.d_out(), params.d_sae);
    let architecture = saelens_name(params)?;
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let mut tensors = vec![
        TensorOut::f32("W_enc", &[d, n], &params.w_enc),
        TensorOut::f32("W_dec", &[n, d_out], &params.w_dec),
        TensorOut::f32("b_dec", &[d_out], &params.b_dec),
    ];
    if !matches!(params.activation, Activation::Gated { .. }) {
        tensors.push(TensorOut::f32("b_enc", &[n], &params.b_enc));
    }
    if let Some(w_skip) = params.w_skip() {
        tensors.push(TensorOut::f32("W_skip", &[d_out, d], w_skip));
    }
    let mut cfg = json!({
        "architecture": architecture,
        "d_in": d,
        "d_sae": n,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": !params.is_transcoder(),
        "normalize_activations": match params.input_norm {
            InputNorm::None => "none",
            InputNorm::ConstantNormRescale => "constant_norm_rescale",
            InputNorm::LayerNorm => "layer_norm",
        },
        "reshape_activations": "none",
        "metadata": metadata,
    });
    if params.is_transcoder() {
        cfg["d_out"] = json!(d_out);
    }
    match &params.activation {
        Activation::TopK { k } => {
            cfg["k"] = json!(k);
            cfg["rescale_acts_by_decoder_norm"] = json!(false);
        }
        Activation::Relu => {}
        Activation::JumpRelu { threshold } => {
            tensors.push(TensorOut::f32("threshold", &[n], threshold));
        }
        Activation::Gated {
            b_gate,
            r_mag,
            b_mag,
        } => {
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

/// SAELens' architecture name for `params`, or why it has none (a TopK or gated transcoder).
fn saelens_name(params: &SaeParams) -> anyhow::Result<&'static str> {
    let skip = params.w_skip().is_some();
    Ok(match (&params.activation, params.is_transcoder(), skip) {
        (activation, false, _) => activation.name(),
        (Activation::Relu, true, false) => "transcoder",
        (Activation::Relu, true, true) => "skip_transcoder",
        (Activation::JumpRelu { .. }, true, false) => "jumprelu_transcoder",
        (Activation::JumpRelu { .. }, true, true) => "jumprelu_skip_transcoder",
        (activation, true, _) => bail!(
            "SAELens has no {} transcoder (its transcoders are ReLU and JumpReLU); a TopK transcoder is written in sparsify's layout",
            activation.name()
        ),
    })
}

/// The weights read in f64, biases in the form our encoder computes ((x − b_dec)·W_enc + b),
/// and a gated SAE's gate parameters.
struct Weights {
    /// A transcoder's `w_dec` and `b_dec` are [d_sae, d_out] and [d_out] (nothing is folded
    /// into them).
    folding: Folding,
    b_enc: Vec<f64>,
    gate: Option<(Vec<f64>, Vec<f64>, Vec<f64>)>,
    threshold: Option<Vec<f64>>,
    /// A skip-transcoder's W_skip [d_out, d_in].
    w_skip: Option<Vec<f64>>,
}

fn read_weights(dir: &Path, cfg: &SaeLensConfig) -> anyhow::Result<Weights> {
    let (d, n) = (cfg.d_in, cfg.d_sae);
    let path = dir.join("sae_weights.safetensors");
    let bytes = read_safetensors(&path)?;
    let st = parse(&bytes, &path)?;
    let vector = |name: &str| read_tensor_f64(&st, name, &[n], &path);
    let d_out = cfg.transcoder.map_or(d, |t| t.d_out);
    let folding = Folding {
        d,
        n,
        w_enc: read_tensor_f64(&st, "W_enc", &[d, n], &path)?,
        w_dec: read_tensor_f64(&st, "W_dec", &[n, d_out], &path)?,
        b_dec: read_tensor_f64(&st, "b_dec", &[d_out], &path)?,
    };
    let w_skip = match cfg.transcoder {
        Some(t) if t.skip => Some(read_tensor_f64(&st, "W_skip", &[d_out, d], &path)?),
        _ => None,
    };
    let gated = cfg.architecture == SaeLensArchitecture::Gated;
    let b_enc = if gated {
        vec![0.0; n]
    } else {
        vector("b_enc")?
    };
    let gate = if gated {
        Some((vector("b_gate")?, vector("r_mag")?, vector("b_mag")?))
    } else {
        None
    };
    let threshold = if cfg.architecture == SaeLensArchitecture::JumpRelu {
        Some(vector("threshold")?)
    } else {
        None
    };
    Ok(Weights {
        folding,
        b_enc,
        gate,
        threshold,
        w_skip,
    })
}

impl Weights {
    /// TopK of h·‖W_dec,i‖ decoded through f/‖W_dec,i‖ is TopK of h' = h·‖W_dec,i‖ decoded
    /// through unit rows: the norms folded into W_enc and b_enc (SAELens' fold_W_dec_norm).
    fn fold_decoder_norms(&mut self) {
        let (d, n) = (self.folding.d, self.folding.n);
        let f = &mut self.folding;
        for (i, (row, bias)) in f.w_dec.chunks_exact_mut(d).zip(&mut self.b_enc).enumerate() {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|v| *v /= norm);
                *bias *= norm;
                for c in 0..d {
                    f.w_enc[c * n + i] *= norm;
                }
            }
        }
    }

    /// x·W_enc + b equals (x − b_dec)·W_enc + (b + b_dec·W_enc).
    fn fold_b_dec_shift(&mut self) {
        let n = self.folding.n;
        let b_dec32: Vec<f32> = self.folding.b_dec.iter().map(|&v| v as f32).collect();
        let w_enc32: Vec<f32> = self.folding.w_enc.iter().map(|&v| v as f32).collect();
        let shift = times_w_enc(&b_dec32, &w_enc32, n);
        match &mut self.gate {
            Some((b_gate, r_mag, b_mag)) => {
                for i in 0..n {
                    b_gate[i] += shift[i];
                    b_mag[i] += r_mag[i].exp() * shift[i];
                }
            }
            None => self.b_enc.iter_mut().zip(&shift).for_each(|(b, s)| *b += s),
        }
    }
}

/// The row normalisation SAELens applies at run time, or, for a training checkpoint, its
/// scaler folded into the weights (whitening first, then the scale).
fn input_norm(
    dir: &Path,
    cfg: &SaeLensConfig,
    folding: &mut Folding,
    folded: &mut Vec<String>,
) -> anyhow::Result<InputNorm> {
    let average = match cfg.normalization {
        Normalization::None => return Ok(InputNorm::None),
        Normalization::ConstantNormRescale => return Ok(InputNorm::ConstantNormRescale),
        Normalization::LayerNorm => return Ok(InputNorm::LayerNorm),
        Normalization::ExpectedAverageOnlyIn => true,
        Normalization::CovarianceWhitening => false,
    };
    let needs = if average {
        "the scaling factor it was trained with (activation_scaler.json with a \"scaling_factor\")"
    } else {
        "the whitening it was trained with (activation_scaler.json and activation_whitening.safetensors)"
    };
    let usable = read_scaler(dir, cfg.d_in)?.filter(|s| {
        if average {
            s.scaling_factor.is_some()
        } else {
            s.whitening.is_some()
        }
    });
    let Some(scaler) = usable else {
        bail!(
            "{}: \"normalize_activations\": \"{}\" needs {needs}, which {} does not hold",
            dir.join("cfg.json").display(),
            cfg.normalization_name,
            dir.display()
        );
    };
    if let Some((mean, matrix, inverse)) = &scaler.whitening {
        folding.whitening(mean, matrix, inverse);
        folded.push("covariance whitening from activation_whitening.safetensors folded into W_enc, W_dec, b_dec".into());
    }
    if let Some(s) = scaler.scaling_factor {
        folding.scale(s);
        folded.push(format!(
            "scaling factor {s} from activation_scaler.json folded into W_enc, W_dec, b_dec"
        ));
    }
    Ok(InputNorm::None)
}

/// Loads a SAELens SAE directory.
pub fn load_saelens(dir: &Path) -> anyhow::Result<(SaeParams, Provenance)> {
    let cfg = SaeLensConfig::read(&dir.join("cfg.json"))?;
    let mut weights = read_weights(dir, &cfg)?;
    let mut folded = Vec::new();
    if cfg.rescale_acts_by_decoder_norm {
        weights.fold_decoder_norms();
        folded.push(
            "rescale_acts_by_decoder_norm: decoder row norms folded into W_enc and b_enc".into(),
        );
    }
    if !cfg.apply_b_dec_to_input && cfg.transcoder.is_none() {
        weights.fold_b_dec_shift();
        folded
            .push("apply_b_dec_to_input: false, as b_dec·W_enc added to the encoder biases".into());
    }
    let input_norm = input_norm(dir, &cfg, &mut weights.folding, &mut folded)?;
    let activation = match cfg.architecture {
        SaeLensArchitecture::TopK { k } => Activation::TopK { k },
        SaeLensArchitecture::Standard => Activation::Relu,
        SaeLensArchitecture::JumpRelu => Activation::JumpRelu {
            threshold: to_f32(weights.threshold.take().unwrap_or_default()),
        },
        SaeLensArchitecture::Gated => {
            let (b_gate, r_mag, b_mag) = weights.gate.take().unwrap_or_default();
            Activation::Gated {
                b_gate: to_f32(b_gate),
                r_mag: to_f32(r_mag),
                b_mag: to_f32(b_mag),
            }
        }
    };
    let d_out = cfg.transcoder.map_or(cfg.d_in, |t| t.d_out);
    let provenance = Provenance {
        layout: "saelens",
        architecture: activation.name(),
        transcoder: cfg.transcoder.is_some(),
        skip: cfg.transcoder.is_some_and(|t| t.skip),
        d_in: cfg.d_in,
        d_out,
        hook_name_out: cfg.hook_name_out.clone(),
        d_sae: cfg.d_sae,
        k: activation_k(&activation),
        normalize_activations: cfg.normalization_name.clone(),
        model_name: cfg.model_name.clone(),
        hook_name: cfg.hook_name.clone(),
        context_size: cfg.context_size,
        dtype: cfg.dtype.clone(),
        folded,
        ..Provenance::default()
    };
    let f = weights.folding;
    let params = SaeParams {
        input_norm,
        d_in: cfg.d_in,
        d_sae: cfg.d_sae,
        activation,
        w_enc: to_f32(f.w_enc),
        b_enc: to_f32(weights.b_enc),
        w_dec: to_f32(f.w_dec),
        b_dec: to_f32(f.b_dec),
        transcoder: cfg.transcoder.map(|t| Transcoding {
            d_out: t.d_out,
            w_skip: weights.w_skip.take().map(to_f32),
        }),
    };
    Ok((params, provenance))
}

fn activation_k(activation: &Activation) -> Option<usize> {
    match activation {
        Activation::TopK { k } => Some(*k),
        _ => None,
    }
}
