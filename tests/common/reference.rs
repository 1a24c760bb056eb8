//! CPU references in f64 for the TopK SAE (notation as in REFERENCE.md):
//! W_enc [d_in, d_sae], W_dec [d_sae, d_in], h = (x − b_dec)·W_enc + b_enc.

#![allow(dead_code)]
// The references spell out the index notation of the maths on purpose.
#![allow(clippy::needless_range_loop)]

/// A tiny SAE and a batch, all in f64 on the host.
#[derive(Clone, Debug)]
pub struct RefSae {
    pub d_in: usize,
    pub d_sae: usize,
    pub w_enc: Vec<f64>,
    pub b_enc: Vec<f64>,
    pub w_dec: Vec<f64>,
    pub b_dec: Vec<f64>,
}

impl RefSae {
    /// The f64 copy of an SAE's parameters.
    pub fn from_params(p: &sae_wgpu::sae::params::SaeParams) -> RefSae {
        RefSae {
            d_in: p.d_in,
            d_sae: p.d_sae,
            w_enc: super::to_f64(&p.w_enc),
            b_enc: super::to_f64(&p.b_enc),
            w_dec: super::to_f64(&p.w_dec),
            b_dec: super::to_f64(&p.b_dec),
        }
    }
}

pub fn encode(x: &[f64], rows: usize, sae: &RefSae) -> Vec<f64> {
    let (d_in, d_sae) = (sae.d_in, sae.d_sae);
    let mut h = vec![0.0; rows * d_sae];
    for r in 0..rows {
        for n in 0..d_sae {
            let mut acc = sae.b_enc[n];
            for c in 0..d_in {
                acc += (x[r * d_in + c] - sae.b_dec[c]) * sae.w_enc[c * d_sae + n];
            }
            h[r * d_sae + n] = acc;
        }
    }
    h
}

/// TopK of ReLU(h) per row, sorted by (value desc, index asc); `eligible` masks latents to −∞.
pub fn topk(
    h: &[f32],
    rows: usize,
    cols: usize,
    k: usize,
    eligible: Option<&[u32]>,
) -> (Vec<u32>, Vec<f32>) {
    let mut idx = Vec::with_capacity(rows * k);
    let mut val = Vec::with_capacity(rows * k);
    for r in 0..rows {
        let mut row: Vec<(f32, u32)> = (0..cols)
            .map(|c| {
                let v = h[r * cols + c];
                let relu = if v > 0.0 { v } else { 0.0 };
                let masked = eligible.is_some_and(|m| m[c] == 0);
                (if masked { f32::NEG_INFINITY } else { relu }, c as u32)
            })
            .collect();
        row.sort_by(|a, b| b.0.partial_cmp(&a.0).expect("finite").then(a.1.cmp(&b.1)));
        for &(v, i) in row.iter().take(k) {
            idx.push(i);
            // A masked latent taken because too few were eligible contributes nothing.
            val.push(if v == f32::NEG_INFINITY { 0.0 } else { v });
        }
    }
    (idx, val)
}

pub fn decode(idx: &[u32], val: &[f64], rows: usize, k: usize, sae: &RefSae) -> Vec<f64> {
    let d_in = sae.d_in;
    let mut x_hat = vec![0.0; rows * d_in];
    for r in 0..rows {
        for c in 0..d_in {
            let mut acc = 0.0;
            for j in 0..k {
                let e = r * k + j;
                acc += val[e] * sae.w_dec[idx[e] as usize * d_in + c];
            }
            x_hat[r * d_in + c] = acc + sae.b_dec[c];
        }
    }
    x_hat
}

/// Σ_r ‖x[r] − x̄‖².
pub fn centered_sq(x: &[f64], rows: usize, cols: usize) -> f64 {
    let mut total = 0.0;
    for c in 0..cols {
        let mean = (0..rows).map(|r| x[r * cols + c]).sum::<f64>() / rows as f64;
        total += (0..rows)
            .map(|r| (x[r * cols + c] - mean).powi(2))
            .sum::<f64>();
    }
    total
}

/// Gradients of the FVU loss L = Σ‖x − x̂‖² / Σ‖x − x̄‖² with the TopK selection held fixed.
#[derive(Clone, Debug)]
pub struct RefGrads {
    pub grad_out: Vec<f64>,
    pub code_grad: Vec<f64>,
    pub w_enc: Vec<f64>,
    pub b_enc: Vec<f64>,
    pub w_dec: Vec<f64>,
    pub b_dec: Vec<f64>,
}

pub fn fvu_grads(
    x: &[f64],
    rows: usize,
    idx: &[u32],
    val: &[f64],
    k: usize,
    sae: &RefSae,
) -> RefGrads {
    let (d_in, d_sae) = (sae.d_in, sae.d_sae);
    let x_hat = decode(idx, val, rows, k, sae);
    let variance = centered_sq(x, rows, d_in);
    let grad_out: Vec<f64> = x_hat
        .iter()
        .zip(x)
        .map(|(xh, xv)| 2.0 * (xh - xv) / variance)
        .collect();
    let mut code_grad = vec![0.0; rows * k];
    let mut g_w_dec = vec![0.0; d_sae * d_in];
    let mut g_w_enc = vec![0.0; d_in * d_sae];
    let mut g_b_enc = vec![0.0; d_sae];
    let mut g_b_dec = vec![0.0; d_in];
    for r in 0..rows {
        for c in 0..d_in {
            g_b_dec[c] += grad_out[r * d_in + c];
        }
        for j in 0..k {
            let e = r * k + j;
            let i = idx[e] as usize;
            let mut dot = 0.0;
            for c in 0..d_in {
                dot += grad_out[r * d_in + c] * sae.w_dec[i * d_in + c];
                g_w_dec[i * d_in + c] += val[e] * grad_out[r * d_in + c];
            }
            let dh = if val[e] > 0.0 { dot } else { 0.0 };
            code_grad[e] = dh;
            g_b_enc[i] += dh;
            for c in 0..d_in {
                g_w_enc[c * d_sae + i] += dh * (x[r * d_in + c] - sae.b_dec[c]);
            }
        }
    }
    for c in 0..d_in {
        for i in 0..d_sae {
            g_b_dec[c] -= sae.w_enc[c * d_sae + i] * g_b_enc[i];
        }
    }
    RefGrads {
        grad_out,
        code_grad,
        w_enc: g_w_enc,
        b_enc: g_b_enc,
        w_dec: g_w_dec,
        b_dec: g_b_dec,
    }
}

/// The FVU loss with the selection `idx` held fixed and values ReLU((x − b_dec)·W_enc + b_enc).
pub fn fvu_loss_fixed_selection(
    x: &[f64],
    rows: usize,
    idx: &[u32],
    k: usize,
    sae: &RefSae,
) -> f64 {
    let h = encode(x, rows, sae);
    let val: Vec<f64> = idx
        .iter()
        .enumerate()
        .map(|(e, &i)| h[(e / k) * sae.d_sae + i as usize].max(0.0))
        .collect();
    let x_hat = decode(idx, &val, rows, k, sae);
    let sse: f64 = x_hat.iter().zip(x).map(|(a, b)| (a - b).powi(2)).sum();
    sse / centered_sq(x, rows, sae.d_in)
}

/// One Adam step in the torch form.
#[allow(clippy::too_many_arguments)]
pub fn adam(
    param: &mut [f64],
    grad: &[f64],
    m: &mut [f64],
    v: &mut [f64],
    lr: f64,
    b1: f64,
    b2: f64,
    eps: f64,
    step: u64,
) {
    let t = step as f64;
    let bias1 = 1.0 - b1.powf(t);
    let bias2 = 1.0 - b2.powf(t);
    for i in 0..param.len() {
        m[i] = b1 * m[i] + (1.0 - b1) * grad[i];
        v[i] = b2 * v[i] + (1.0 - b2) * grad[i] * grad[i];
        param[i] -= lr / bias1 * m[i] / (v[i].sqrt() / bias2.sqrt() + eps);
    }
}

/// BatchTopK over candidate values (all ≥ 0): the `keep`-th largest t (0 when keep covers
/// them all), the values with those below t zeroed, and the smallest kept value above zero.
pub fn batch_topk(values: &[f64], keep: usize) -> (f64, Vec<f64>, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let t = if keep == 0 || keep >= values.len() {
        0.0
    } else {
        sorted[keep - 1]
    };
    let kept: Vec<f64> = values
        .iter()
        .map(|&v| if v < t { 0.0 } else { v })
        .collect();
    let smallest = kept
        .iter()
        .copied()
        .filter(|&v| v > 0.0)
        .fold(f64::INFINITY, f64::min);
    (t, kept, if smallest.is_finite() { smallest } else { 0.0 })
}
