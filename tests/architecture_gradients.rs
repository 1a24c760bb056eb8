//! Each architecture's whole training-loss gradient, as one GPU training step computes it,
//! against central finite differences of an f64 CPU loss on a tiny SAE (AuxK off): TopK,
//! BatchTopK (the batch-wide selection), Matryoshka (the sum of the prefixes' FVUs) and ReLU +
//! L1 (mean squared error plus the decoder-norm weighted L1 penalty, no unit-norm constraint). The
//! selection is piecewise constant, so the differences are taken where it does not change.
//! For the TopK family W_dec's gradient is compared after removing each row's parallel
//! component, as the unit-norm constraint does before Adam.

mod common;

use common::{gpu, random_vec, rng};
use sae_wgpu::gpu::kernels::optim::AdamConfig;
use sae_wgpu::sae::architecture::Architecture;
use sae_wgpu::sae::feed::{Feed, MemberStep};
use sae_wgpu::sae::params::SaeParams;
use sae_wgpu::sae::trainer::Trainer;

const D_SAE: usize = 24;
const ROWS: usize = 9;
const K: usize = 2;
/// Matryoshka prefixes below the full width.
const PREFIXES: [usize; 2] = [6, 13];
/// ReLU + L1's coefficient.
const L1: f64 = 0.7;

/// Parameters in f64: W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in], b_dec.
type Params = [Vec<f64>; 4];

/// Σ over the reconstructions (the full one, and each prefix for Matryoshka) of
/// Σ‖x − x̂‖² / Σ‖x − x̄‖².
fn loss(p: &Params, x: &[f64], architecture: Architecture, candidates: usize) -> f64 {
    let [w_enc, b_enc, w_dec, b_dec] = p;
    let d_in = b_dec.len();
    let mut codes = vec![0.0f64; ROWS * D_SAE];
    for r in 0..ROWS {
        let mut h: Vec<(f64, usize)> = (0..D_SAE)
            .map(|i| {
                let mut v = b_enc[i];
                for c in 0..d_in {
                    v += (x[r * d_in + c] - b_dec[c]) * w_enc[c * D_SAE + i];
                }
                (v.max(0.0), i)
            })
            .collect();
        h.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(v, i) in h.iter().take(candidates) {
            codes[r * D_SAE + i] = v;
        }
    }
    if architecture.batch_selection() {
        let mut all: Vec<f64> = codes.iter().copied().filter(|&v| v > 0.0).collect();
        all.sort_by(|a, b| b.total_cmp(a));
        if let Some(&t) = all.get(K * ROWS - 1) {
            codes.iter_mut().filter(|v| **v < t).for_each(|v| *v = 0.0);
        }
    }
    // Σ over rows of ‖x − x̂‖², x̂ decoded from the first `width` latents.
    let squared_error = |width: usize| -> f64 {
        let mut total = 0.0;
        for r in 0..ROWS {
            for c in 0..d_in {
                let mut x_hat = b_dec[c];
                for i in 0..width {
                    x_hat += codes[r * D_SAE + i] * w_dec[i * d_in + c];
                }
                total += (x[r * d_in + c] - x_hat).powi(2);
            }
        }
        total
    };
    if architecture == Architecture::Relu {
        // SAELens' mean squared error plus λ·mean_b Σᵢ fᵢ·‖W_dec,i‖.
        let mut penalty = 0.0;
        for i in 0..D_SAE {
            let norm = (0..d_in)
                .map(|c| w_dec[i * d_in + c].powi(2))
                .sum::<f64>()
                .sqrt();
            penalty += L1 * norm * (0..ROWS).map(|r| codes[r * D_SAE + i]).sum::<f64>();
        }
        return (squared_error(D_SAE) + penalty) / ROWS as f64;
    }
    let mut widths = vec![D_SAE];
    if architecture == Architecture::Matryoshka {
        widths.extend(PREFIXES);
    }
    let mean: Vec<f64> = (0..d_in)
        .map(|c| (0..ROWS).map(|r| x[r * d_in + c]).sum::<f64>() / ROWS as f64)
        .collect();
    let variance: f64 = (0..ROWS * d_in)
        .map(|e| (x[e] - mean[e % d_in]).powi(2))
        .sum();
    widths.into_iter().map(squared_error).sum::<f64>() / variance
}

#[test]
fn every_architecture_gradient_matches_finite_differences() {
    let Some(gpu) = gpu() else { return };
    // d_in 5 takes the narrow code-gradient kernel (a thread per entry), 300 the wide one (a
    // workgroup per entry); at 300 every 13th parameter is differenced.
    let cases = [
        Architecture::TopK,
        Architecture::BatchTopK,
        Architecture::Matryoshka,
        Architecture::Relu,
    ]
    .into_iter()
    .flat_map(|a| [(a, 5, 1), (a, 300, 13)]);
    for (architecture, d_in, stride) in cases {
        let name = format!("{} d_in {d_in}", architecture.name());
        let relu = architecture == Architecture::Relu;
        // ReLU keeps every positive code (its cap is the whole dictionary here).
        let candidates = architecture.row_candidates(if relu { D_SAE } else { K }, D_SAE);
        let mut r = rng(17);
        let mut params = if relu {
            SaeParams::init_relu(d_in, D_SAE, candidates, 3)
        } else {
            SaeParams::init_topk(d_in, D_SAE, candidates, 3)
        };
        params.b_enc = random_vec(&mut r, D_SAE, 0.1);
        params.b_dec = random_vec(&mut r, d_in, 0.3);
        let x = random_vec(&mut r, ROWS * d_in, 1.0);

        let mut trainer =
            Trainer::new(gpu, &params, ROWS, AdamConfig::default(), 1 << 30, None).unwrap();
        if architecture.batch_selection() {
            trainer = trainer.with_batch_topk(K, 0.0).unwrap();
        }
        if architecture == Architecture::Matryoshka {
            trainer = trainer.with_matryoshka(&PREFIXES).unwrap();
        }
        if relu {
            trainer = trainer.with_l1(None).unwrap();
        }
        let mut feed = Feed::new(gpu, ROWS, d_in).unwrap();
        let args = MemberStep {
            scale: 1.0,
            lr: 0.0,
            step: 1,
            with_metrics: false,
            penalty: L1,
        };
        feed.step_rows(&x, &mut trainer, args).unwrap();
        let got = trainer.gradients().unwrap();

        let f64s = |v: &[f32]| v.iter().map(|&a| f64::from(a)).collect::<Vec<f64>>();
        let base: Params = [
            f64s(&params.w_enc),
            f64s(&params.b_enc),
            f64s(&params.w_dec),
            f64s(&params.b_dec),
        ];
        let x64 = f64s(&x);
        let eps = 1e-5;
        for (t, tensor) in ["W_enc", "b_enc", "W_dec", "b_dec"].iter().enumerate() {
            let mut fd = vec![0.0f64; base[t].len()];
            for (j, slot) in fd.iter_mut().enumerate() {
                if j % stride != 0 {
                    continue;
                }
                let mut plus = base.clone();
                plus[t][j] += eps;
                let mut minus = base.clone();
                minus[t][j] -= eps;
                *slot = (loss(&plus, &x64, architecture, candidates)
                    - loss(&minus, &x64, architecture, candidates))
                    / (2.0 * eps);
            }
            if t == 2 && stride == 1 && !relu {
                // Unit-norm constraint: only the component across each row is kept.
                for (row, g) in base[2].chunks(d_in).zip(fd.chunks_mut(d_in)) {
                    let norm_sq: f64 = row.iter().map(|v| v * v).sum();
                    let dot: f64 = row.iter().zip(g.iter()).map(|(a, b)| a * b).sum();
                    g.iter_mut()
                        .zip(row)
                        .for_each(|(g, w)| *g -= dot / norm_sq * w);
                }
            }
            let norm: f64 = fd.iter().map(|v| v * v).sum::<f64>().sqrt();
            let err: f64 = fd
                .iter()
                .zip(&got[t])
                .step_by(stride)
                .map(|(a, b)| (a - f64::from(*b)).powi(2))
                .sum::<f64>()
                .sqrt();
            if t == 2 && stride > 1 && !relu {
                continue; // W_dec's projection needs whole rows: checked at d_in 5.
            }
            assert!(norm > 1e-6, "{name} {tensor}: the gradient is zero");
            assert!(
                err / norm < 1e-3,
                "{name} {tensor}: relative error {:.2e} against finite differences",
                err / norm
            );
        }
    }
}
