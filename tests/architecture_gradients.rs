//! Each architecture's whole training-loss gradient, as one GPU training step computes it,
//! against central finite differences of an f64 CPU loss on a tiny SAE (AuxK off): TopK,
//! BatchTopK (the batch-wide selection), Matryoshka (the sum of the prefixes' FVUs) and ReLU +
//! L1 (mean squared error plus the decoder-norm weighted L1 penalty, no unit-norm constraint) and
//! JumpReLU (its weights' gradient; its thresholds' pseudo-gradient, which the straight-through
//! estimator defines, against the estimator's formula on finite differences of the loss in the
//! codes). The selection is piecewise constant, so the differences are taken where it does not
//! change.
//! For the TopK family W_dec's gradient is compared after removing each row's parallel
//! component, as the unit-norm constraint does before Adam.

mod common;

use common::{gpu, random_vec, rng, to_f64};
use sae_wgpu::gpu::kernels::optim::AdamConfig;
use sae_wgpu::gpu::Gpu;
use sae_wgpu::sae::arch::jumprelu::JumpReluConfig;
use sae_wgpu::sae::arch::{batch_topk, jumprelu, matryoshka, relu};
use sae_wgpu::sae::arch::{Architecture, L0Penalty, ThresholdParam};
use sae_wgpu::sae::params::SaeParams;
use sae_wgpu::sae::trainer::Trainer;
use sae_wgpu::sae::trainer::{Feed, MemberStep};

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
    if matches!(
        architecture,
        Architecture::BatchTopK | Architecture::Matryoshka
    ) {
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
        trainer = match architecture {
            Architecture::BatchTopK => batch_topk::attach(trainer, K, 0.0).unwrap(),
            Architecture::Matryoshka => matryoshka::attach(trainer, K, 0.0, &PREFIXES).unwrap(),
            Architecture::Relu => relu::attach(trainer, None).unwrap(),
            _ => trainer,
        };
        let got = one_step_gradients(gpu, &mut trainer, &x, d_in, L1);

        let base = params_f64(&params);
        let x64 = to_f64(&x);
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

/// The gradients one GPU training step (learning rate 0) computes on the rows `x`, in
/// checkpoint order.
fn one_step_gradients<'g>(
    gpu: &'g Gpu,
    trainer: &mut Trainer<'g>,
    x: &[f32],
    d_in: usize,
    penalty: f64,
) -> Vec<Vec<f32>> {
    let mut feed = Feed::new(gpu, ROWS, d_in).unwrap();
    let args = MemberStep {
        scale: 1.0,
        target_scale: 1.0,
        lr: 0.0,
        step: 1,
        with_metrics: false,
        penalty,
    };
    feed.step_rows(x, trainer, args).unwrap();
    trainer.gradients().unwrap()
}

fn params_f64(params: &SaeParams) -> Params {
    [
        to_f64(&params.w_enc),
        to_f64(&params.b_enc),
        to_f64(&params.w_dec),
        to_f64(&params.b_dec),
    ]
}

/// JumpReLU's loss on given codes F [ROWS, D_SAE]: SAELens' mean squared error plus the tanh
/// penalty λ·mean_b Σᵢ tanh(4·fᵢ·‖W_dec,i‖) (`tanh`), or nothing for the step penalty (whose
/// value does not change with the weights where the selection does not).
fn jumprelu_loss_of_codes(p: &Params, x: &[f64], codes: &[f64], tanh: bool) -> f64 {
    let [_, _, w_dec, b_dec] = p;
    let d_in = b_dec.len();
    let mut total = 0.0;
    for r in 0..ROWS {
        for c in 0..d_in {
            let mut x_hat = b_dec[c];
            for i in 0..D_SAE {
                x_hat += codes[r * D_SAE + i] * w_dec[i * d_in + c];
            }
            total += (x[r * d_in + c] - x_hat).powi(2);
        }
    }
    if tanh {
        for i in 0..D_SAE {
            let norm = decoder_norm(w_dec, i, d_in);
            for r in 0..ROWS {
                total += L0 * (4.0 * codes[r * D_SAE + i] * norm).tanh();
            }
        }
    }
    total / ROWS as f64
}

fn decoder_norm(w_dec: &[f64], i: usize, d_in: usize) -> f64 {
    (0..d_in)
        .map(|c| w_dec[i * d_in + c].powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Pre-activations h [ROWS, D_SAE] = (x − b_dec)·W_enc + b_enc.
fn pre_activations(p: &Params, x: &[f64]) -> Vec<f64> {
    let [w_enc, b_enc, _, b_dec] = p;
    let d_in = b_dec.len();
    let mut h = vec![0.0f64; ROWS * D_SAE];
    for r in 0..ROWS {
        for i in 0..D_SAE {
            let mut v = b_enc[i];
            for c in 0..d_in {
                v += (x[r * d_in + c] - b_dec[c]) * w_enc[c * D_SAE + i];
            }
            h[r * D_SAE + i] = v;
        }
    }
    h
}

/// JumpReLU's codes: h where h > θ, else 0.
fn jump_codes(h: &[f64], theta: &[f64]) -> Vec<f64> {
    h.iter()
        .enumerate()
        .map(|(e, &v)| if v > theta[e % D_SAE] { v } else { 0.0 })
        .collect()
}

/// JumpReLU's penalty coefficient.
const L0: f64 = 0.3;

#[test]
fn jumprelu_pseudo_gradient_matches_the_estimator() {
    let Some(gpu) = gpu() else { return };
    let bandwidth = 0.1f64;
    let cases = [
        (L0Penalty::Step, ThresholdParam::Direct, 5, 1),
        (L0Penalty::Tanh, ThresholdParam::Log, 5, 1),
        (L0Penalty::Tanh, ThresholdParam::Direct, 300, 13),
    ];
    for (penalty, kind, d_in, stride) in cases {
        let name = format!("jumprelu {penalty:?} {kind:?} d_in {d_in}");
        let tanh = penalty == L0Penalty::Tanh;
        let mut r = rng(29);
        let mut params = SaeParams::init_relu(d_in, D_SAE, D_SAE, 5);
        params.b_enc = random_vec(&mut r, D_SAE, 0.1);
        params.b_dec = random_vec(&mut r, d_in, 0.3);
        let x = random_vec(&mut r, ROWS * d_in, 1.0);
        // Thresholds in [0.01, 0.11]: pre-activations lie on both sides and inside the window.
        let theta0: Vec<f32> = random_vec(&mut r, D_SAE, 0.05)
            .iter()
            .map(|v| 0.06 + v)
            .collect();
        let initial: Vec<f32> = match kind {
            ThresholdParam::Direct => theta0.clone(),
            ThresholdParam::Log => theta0.iter().map(|t| t.ln()).collect(),
        };
        let config = JumpReluConfig {
            bandwidth: bandwidth as f32,
            penalty,
            param: kind,
            clip: None,
        };
        let trainer =
            Trainer::new(gpu, &params, ROWS, AdamConfig::default(), 1 << 30, None).unwrap();
        let mut trainer = jumprelu::attach(trainer, config, &initial).unwrap();
        let theta: Vec<f64> = trainer
            .thresholds()
            .unwrap()
            .unwrap()
            .iter()
            .map(|&t| f64::from(t))
            .collect();
        let got = one_step_gradients(gpu, &mut trainer, &x, d_in, L0);
        assert_eq!(got.len(), 5, "{name}: the thresholds' gradient is missing");

        let base = params_f64(&params);
        let x64 = to_f64(&x);
        // The loss and which entries are selected.
        let loss = |p: &Params| {
            let codes = jump_codes(&pre_activations(p, &x64), &theta);
            let selected: Vec<bool> = codes.iter().map(|&f| f > 0.0).collect();
            (jumprelu_loss_of_codes(p, &x64, &codes, tanh), selected)
        };
        // The weights: the true gradient (∂f/∂h = H where the selection does not change; a
        // difference across a threshold is left out, marked NaN).
        let eps = 1e-5;
        let (_, selected) = loss(&base);
        for (t, tensor) in ["W_enc", "b_enc", "W_dec", "b_dec"].iter().enumerate() {
            let mut fd = vec![0.0f64; base[t].len()];
            for (j, slot) in fd.iter_mut().enumerate().step_by(stride) {
                let mut plus = base.clone();
                plus[t][j] += eps;
                let mut minus = base.clone();
                minus[t][j] -= eps;
                let ((up, up_sel), (down, down_sel)) = (loss(&plus), loss(&minus));
                *slot = if up_sel == selected && down_sel == selected {
                    (up - down) / (2.0 * eps)
                } else {
                    f64::NAN
                };
            }
            common::assert_gradient_close(&format!("{name} {tensor}"), &fd, &got[t], stride);
        }
        // The thresholds: the estimator −(θ/ε)·K(u)·∂L/∂f (− (1/ε)·K(u)·λ/B for the step
        // penalty), with ∂L/∂f by central differences of the loss in the codes.
        let h = pre_activations(&base, &x64);
        let codes = jump_codes(&h, &theta);
        let mut want = vec![0.0f64; D_SAE];
        let mut in_window = 0;
        for e in 0..ROWS * D_SAE {
            let i = e % D_SAE;
            let u = (h[e] - theta[i]) / bandwidth;
            if !(u > -0.5 && u < 0.5) {
                continue;
            }
            in_window += 1;
            let mut plus = codes.clone();
            plus[e] += eps;
            let mut minus = codes.clone();
            minus[e] -= eps;
            let d_loss_d_f = (jumprelu_loss_of_codes(&base, &x64, &plus, tanh)
                - jumprelu_loss_of_codes(&base, &x64, &minus, tanh))
                / (2.0 * eps);
            want[i] -= theta[i] / bandwidth * d_loss_d_f;
            if !tanh {
                want[i] -= L0 / ROWS as f64 / bandwidth;
            }
        }
        if kind == ThresholdParam::Log {
            want.iter_mut().zip(&theta).for_each(|(g, t)| *g *= t);
        }
        assert!(
            in_window >= 10,
            "{name}: only {in_window} entries in the window"
        );
        common::assert_gradient_close(&format!("{name} threshold"), &want, &got[4], 1);
    }
}
