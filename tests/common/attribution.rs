//! The f64 reference of direct attribution: every latent's summed pre-activation and each
//! component's, head's and transcoder part's summed term over the rows where it fires,
//! computed the plain way (dense products, no gathers) from the same rows.

use std::collections::HashMap;

use sae_wgpu::sae::params::{InputNorm, SaeParams};

/// The rows of a random cache, as the test wrote them.
pub struct RefCache {
    pub rows: usize,
    pub d: usize,
    /// Each component [rows, d], in the order of the pass's component list.
    pub components: Vec<Vec<f32>>,
    pub resid: Vec<f32>,
    /// Per block: z [rows, heads·d_head] and o_proj [d, heads·d_head].
    pub heads: Vec<(Vec<f32>, Vec<f32>)>,
    pub n_heads: usize,
    /// The transcoder's input [rows, d] and the index of the component it splits.
    pub tc_input: Vec<f32>,
    pub tc_component: usize,
    /// Each row's token id.
    pub tokens: Vec<i32>,
}

#[derive(Debug, Default)]
pub struct RefTotals {
    pub fire_count: Vec<u64>,
    pub sum_pre: Vec<f64>,
    /// [d_sae, components + 1] (bias last).
    pub contribution: Vec<f64>,
    /// [d_sae, blocks·heads].
    pub heads: Vec<f64>,
    /// [d_sae, 4]: features, skip, bias, error.
    pub parts: Vec<f64>,
    pub upstream: Vec<HashMap<u32, f64>>,
    /// Positive pre-activations beyond the cap of a thresholded SAE.
    pub dropped: u64,
    /// Per latent: how often it fires on each token.
    pub latent_tokens: Vec<HashMap<i32, u32>>,
    /// Per head: its terms into every selected latent, per token.
    pub head_tokens: Vec<HashMap<i32, f64>>,
    /// Per group, per head: its terms into the group's members, per token.
    pub group_head_tokens: Vec<Vec<HashMap<i32, f64>>>,
    /// Per transcoder feature: how often it fires on each token.
    pub feature_tokens: HashMap<u32, HashMap<i32, u32>>,
}

fn dot(a: &[f32], w: &[f32], n: usize, col: usize) -> f64 {
    a.iter()
        .enumerate()
        .map(|(r, &v)| f64::from(v) * f64::from(w[r * n + col]))
        .sum()
}

/// The selected (id, value > 0) of TopK over `pre`.
fn topk(pre: &[f64], k: usize) -> Vec<(usize, f64)> {
    let mut order: Vec<(usize, f64)> = pre.iter().copied().enumerate().collect();
    order.sort_by(|a, b| b.1.total_cmp(&a.1));
    order
        .into_iter()
        .take(k)
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// A TopK transcoder's codes and reconstruction of one row (input uncentred, skip added).
fn transcode(tc: &SaeParams, x: &[f32]) -> (Vec<(usize, f64)>, Vec<f64>, Vec<f64>) {
    let (n, d_out) = (tc.d_sae, tc.d_out());
    let pre: Vec<f64> = (0..n)
        .map(|j| dot(x, &tc.w_enc, n, j) + f64::from(tc.b_enc[j]))
        .collect();
    let codes = topk(&pre, tc.k().unwrap_or(n));
    let skip: Vec<f64> = (0..d_out)
        .map(|o| match tc.w_skip() {
            Some(w) => (0..tc.d_in)
                .map(|c| f64::from(w[o * tc.d_in + c]) * f64::from(x[c]))
                .sum(),
            None => 0.0,
        })
        .collect();
    let mut recon: Vec<f64> = (0..d_out)
        .map(|o| f64::from(tc.b_dec[o]) + skip[o])
        .collect();
    for &(j, g) in &codes {
        let row = &tc.w_dec[j * d_out..(j + 1) * d_out];
        recon
            .iter_mut()
            .zip(row)
            .for_each(|(o, &w)| *o += g * f64::from(w));
    }
    (codes, skip, recon)
}

/// The factor a constant-norm-rescaling SAE applies to a row (1 otherwise).
fn row_scale(sae: &SaeParams, x: &[f32]) -> f64 {
    match sae.input_norm {
        InputNorm::ConstantNormRescale => {
            let norm = x.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
            (x.len() as f64).sqrt() / norm
        }
        _ => 1.0,
    }
}

/// The reference totals of `sae` (TopK, or ReLU keeping its `cap` largest positive
/// pre-activations) over `cache`, with heads (also per token, and per token for each of
/// `groups`) and one transcoder.
pub fn reference_totals(
    sae: &SaeParams,
    cache: &RefCache,
    tc: &SaeParams,
    cap: usize,
    groups: &[Vec<usize>],
) -> RefTotals {
    let (n, d) = (sae.d_sae, cache.d);
    let k = sae.k().unwrap_or(cap);
    let cols = cache.components.len() + 1;
    let head_cols = cache.heads.len() * cache.n_heads;
    let mut t = RefTotals {
        fire_count: vec![0; n],
        sum_pre: vec![0.0; n],
        contribution: vec![0.0; n * cols],
        heads: vec![0.0; n * head_cols],
        parts: vec![0.0; n * 4],
        upstream: vec![HashMap::new(); n],
        dropped: 0,
        latent_tokens: vec![HashMap::new(); n],
        head_tokens: vec![HashMap::new(); head_cols],
        group_head_tokens: vec![vec![HashMap::new(); head_cols]; groups.len()],
        feature_tokens: HashMap::new(),
    };
    let bias: Vec<f64> = (0..n)
        .map(|i| f64::from(sae.b_enc[i]) - dot(&sae.b_dec, &sae.w_enc, n, i))
        .collect();
    for r in 0..cache.rows {
        let row = |v: &[f32]| v[r * d..(r + 1) * d].to_vec();
        let x = row(&cache.resid);
        let f = row_scale(sae, &x);
        let pre: Vec<f64> = (0..n)
            .map(|i| f * dot(&x, &sae.w_enc, n, i) + bias[i])
            .collect();
        if sae.k().is_none() {
            let positive = pre.iter().filter(|&&v| v > 0.0).count();
            t.dropped += positive.saturating_sub(k) as u64;
        }
        let (codes, skip, recon) = transcode(tc, &row(&cache.tc_input));
        let target = row(&cache.components[cache.tc_component]);
        let token = cache.tokens[r];
        for &(j, _) in &codes {
            let counts = t.feature_tokens.entry(j as u32).or_default();
            *counts.entry(token).or_insert(0) += 1;
        }
        for (i, h) in topk(&pre, k) {
            t.fire_count[i] += 1;
            *t.latent_tokens[i].entry(token).or_insert(0) += 1;
            t.sum_pre[i] += h;
            for (c, comp) in cache.components.iter().enumerate() {
                t.contribution[i * cols + c] += f * dot(&row(comp), &sae.w_enc, n, i);
            }
            t.contribution[i * cols + cols - 1] += bias[i];
            let heads = head_terms(cache, sae, (r, i, f));
            let in_groups: Vec<usize> = (0..groups.len())
                .filter(|&g| groups[g].contains(&i))
                .collect();
            for (hh, &term) in heads.iter().enumerate() {
                t.heads[i * head_cols + hh] += term;
                *t.head_tokens[hh].entry(token).or_insert(0.0) += term;
                for &g in &in_groups {
                    *t.group_head_tokens[g][hh].entry(token).or_insert(0.0) += term;
                }
            }
            let w_col = |v: &[f64]| -> f64 {
                v.iter()
                    .enumerate()
                    .map(|(c, &x)| x * f64::from(sae.w_enc[c * n + i]))
                    .sum()
            };
            for &(j, g) in &codes {
                let term: f64 = f
                    * g
                    * (0..d)
                        .map(|c| f64::from(tc.w_dec[j * d + c]) * f64::from(sae.w_enc[c * n + i]))
                        .sum::<f64>();
                *t.upstream[i].entry(j as u32).or_insert(0.0) += term;
                t.parts[i * 4] += term;
            }
            let b_dec: Vec<f64> = tc.b_dec.iter().map(|&v| f64::from(v)).collect();
            let error: Vec<f64> = (0..d).map(|c| f64::from(target[c]) - recon[c]).collect();
            t.parts[i * 4 + 1] += f * w_col(&skip);
            t.parts[i * 4 + 2] += f * w_col(&b_dec);
            t.parts[i * 4 + 3] += f * w_col(&error);
        }
    }
    t
}

/// Each head's term (block by block) in latent i's pre-activation on row r.
fn head_terms(cache: &RefCache, sae: &SaeParams, (r, i, f): (usize, usize, f64)) -> Vec<f64> {
    let (n, d, nh) = (sae.d_sae, cache.d, cache.n_heads);
    let mut out = Vec::new();
    for (z, o_proj) in &cache.heads {
        let width = z.len() / cache.rows;
        let dh = width / nh;
        for h in 0..nh {
            let mut term = 0.0;
            for tt in 0..dh {
                let zv = f64::from(z[r * width + h * dh + tt]);
                let col: f64 = (0..d)
                    .map(|c| {
                        f64::from(o_proj[c * width + h * dh + tt]) * f64::from(sae.w_enc[c * n + i])
                    })
                    .sum();
                term += zv * col;
            }
            out.push(f * term);
        }
    }
    out
}
