//! What the SAELens loader folds into the weights, exactly, in f64: a training checkpoint's
//! activation scaler (a scaling factor, a whitening) and the shifts that make every encoder
//! subtract b_dec.

use std::path::Path;

use anyhow::anyhow;
use serde_json::Value;

use super::tensors::{parse, read_json, read_safetensors, read_tensor_f64};

/// Σ_c row[c]·w_enc[c, i] for every latent i (b_dec·W_enc), in f64.
pub fn times_w_enc(row: &[f32], w_enc: &[f32], n: usize) -> Vec<f64> {
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
pub struct Scaler {
    pub scaling_factor: Option<f64>,
    /// (mean [d], matrix [d, d], inverse_matrix [d, d]): z = (x − mean)·M, x = z·M⁻¹ + mean.
    pub whitening: Option<(Vec<f64>, Vec<f64>, Vec<f64>)>,
}

pub fn read_scaler(dir: &Path, d: usize) -> anyhow::Result<Option<Scaler>> {
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
pub struct Folding {
    pub d: usize,
    pub n: usize,
    pub w_enc: Vec<f64>,
    pub w_dec: Vec<f64>,
    pub b_dec: Vec<f64>,
}

impl Folding {
    /// A model that reads z = (x − mean)·M and writes x̂ = ẑ·M⁻¹ + mean, as one on x:
    /// W_enc ← M·W_enc, W_dec ← W_dec·M⁻¹, b_dec ← b_dec·M⁻¹ + mean (SAELens'
    /// `fold_activation_whitening`, for an encoder that subtracts b_dec).
    pub fn whitening(&mut self, mean: &[f64], matrix: &[f64], inverse: &[f64]) {
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
    pub fn scale(&mut self, s: f64) {
        self.w_enc.iter_mut().for_each(|v| *v *= s);
        self.w_dec.iter_mut().for_each(|v| *v /= s);
        self.b_dec.iter_mut().for_each(|v| *v /= s);
    }
}

pub fn to_f32(v: Vec<f64>) -> Vec<f32> {
    v.into_iter().map(|x| x as f32).collect()
}
