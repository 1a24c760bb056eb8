//! Every architecture as a transcoder and a skip-transcoder: the whole training-loss gradient
//! one GPU step computes (W_enc, b_enc, W_dec, b_dec and W_skip), against central finite
//! differences of an f64 CPU loss on a tiny model whose input and target widths differ. The
//! encoder reads x uncentred, the decoder writes ŷ = b_dec + f·W_dec + x·W_skipᵀ, and the loss
//! compares ŷ with the target y: the sum of FVUs (TopK, BatchTopK, Matryoshka's prefixes, each
//! with b_dec and the skip path), or SAELens' mean squared error with the architecture's penalty
//! (ReLU + L1; JumpReLU with the tanh penalty, whose weights' gradient is the true one where
//! the selection does not change). A transcoder's decoder is not held at unit norm, so W_dec's
//! gradient is compared whole. The selection is piecewise constant, so the differences are
//! taken where it does not change (those that cross it are left out, at most a few).

mod common;

use common::{gpu, random_vec, rng, to_f64};
use sae_wgpu::gpu::kernels::optim::AdamConfig;
use sae_wgpu::gpu::Gpu;
use sae_wgpu::sae::arch::jumprelu::JumpReluConfig;
use sae_wgpu::sae::arch::{batch_topk, jumprelu, matryoshka, relu};
use sae_wgpu::sae::arch::{Architecture, L0Penalty, ThresholdParam};
use sae_wgpu::sae::params::{SaeParams, Transcoding};
use sae_wgpu::sae::trainer::{Feed, MemberStep, Trainer};

const D_SAE: usize = 24;
const ROWS: usize = 9;
const K: usize = 2;
/// Matryoshka prefixes below the full width.
const PREFIXES: [usize; 2] = [6, 13];
/// The ReLU family's penalty coefficient (JumpReLU: tanh penalty).
const LAMBDA: f64 = 0.4;
/// JumpReLU's thresholds.
const THETA: f32 = 0.05;

/// A tiny transcoder in f64: W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_out], b_dec [d_out],
/// W_skip [d_out, d_in] (zeros and untouched when the model has none).
#[derive(Clone)]
struct Model {
    tensors: [Vec<f64>; 5],
    d_in: usize,
    d_out: usize,
}

struct Case {
    architecture: Architecture,
    d_in: usize,
    d_out: usize,
    skip: bool,
    /// Every `stride`-th parameter is differenced.
    stride: usize,
}

impl Case {
    fn name(&self) -> String {
        let kind = if self.skip {
            "skip-transcoder"
        } else {
            "transcoder"
        };
        format!(
            "{} {kind} d_in {} d_out {}",
            self.architecture.name(),
            self.d_in,
            self.d_out
        )
    }

    fn relu_family(&self) -> bool {
        matches!(
            self.architecture,
            Architecture::Relu | Architecture::JumpRelu
        )
    }

    /// Codes kept per row before any batch-wide selection.
    fn candidates(&self) -> usize {
        match self.relu_family() {
            true => D_SAE,
            false => K,
        }
    }
}

/// The codes [ROWS, D_SAE] the architecture selects from pre-activations x·W_enc + b_enc.
fn codes(case: &Case, m: &Model, x: &[f64]) -> Vec<f64> {
    let [w_enc, b_enc, ..] = &m.tensors;
    let d_in = m.d_in;
    let mut codes = vec![0.0f64; ROWS * D_SAE];
    for r in 0..ROWS {
        let mut h: Vec<(f64, usize)> = (0..D_SAE)
            .map(|i| {
                let v = b_enc[i]
                    + (0..d_in)
                        .map(|c| x[r * d_in + c] * w_enc[c * D_SAE + i])
                        .sum::<f64>();
                let kept = match case.architecture {
                    Architecture::JumpRelu if v <= f64::from(THETA) => 0.0,
                    _ => v.max(0.0),
                };
                (kept, i)
            })
            .collect();
        h.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(v, i) in h.iter().take(case.candidates()) {
            codes[r * D_SAE + i] = v;
        }
    }
    if matches!(
        case.architecture,
        Architecture::BatchTopK | Architecture::Matryoshka
    ) {
        let mut all: Vec<f64> = codes.iter().copied().filter(|&v| v > 0.0).collect();
        all.sort_by(|a, b| b.total_cmp(a));
        if let Some(&t) = all.get(K * ROWS - 1) {
            codes.iter_mut().filter(|v| **v < t).for_each(|v| *v = 0.0);
        }
    }
    codes
}

/// Σ over rows of ‖y − ŷ‖², ŷ = b_dec + (the first `width` latents' codes)·W_dec + x·W_skipᵀ.
fn squared_error(m: &Model, x: &[f64], y: &[f64], codes: &[f64], width: usize) -> f64 {
    let [_, _, w_dec, b_dec, w_skip] = &m.tensors;
    let (d_in, d_out) = (m.d_in, m.d_out);
    let mut total = 0.0;
    for r in 0..ROWS {
        for c in 0..d_out {
            let mut y_hat = b_dec[c];
            for i in 0..width {
                y_hat += codes[r * D_SAE + i] * w_dec[i * d_out + c];
            }
            for j in 0..d_in {
                y_hat += x[r * d_in + j] * w_skip[c * d_in + j];
            }
            total += (y[r * d_out + c] - y_hat).powi(2);
        }
    }
    total
}

/// The training loss and which entries the selection kept.
fn loss(case: &Case, m: &Model, x: &[f64], y: &[f64]) -> (f64, Vec<bool>) {
    let f = codes(case, m, x);
    let selected = f.iter().map(|&v| v > 0.0).collect();
    let d_out = m.d_out;
    let norm = |i: usize| {
        (0..d_out)
            .map(|c| m.tensors[2][i * d_out + c].powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let value = match case.architecture {
        Architecture::Relu | Architecture::JumpRelu => {
            let mut penalty = 0.0;
            for (e, &code) in f.iter().enumerate() {
                let n = norm(e % D_SAE);
                penalty += match case.architecture {
                    Architecture::Relu => LAMBDA * code * n,
                    _ => LAMBDA * (4.0 * code * n).tanh(),
                };
            }
            (squared_error(m, x, y, &f, D_SAE) + penalty) / ROWS as f64
        }
        _ => {
            let mean: Vec<f64> = (0..d_out)
                .map(|c| (0..ROWS).map(|r| y[r * d_out + c]).sum::<f64>() / ROWS as f64)
                .collect();
            let variance: f64 = (0..ROWS * d_out)
                .map(|e| (y[e] - mean[e % d_out]).powi(2))
                .sum();
            let mut widths = vec![D_SAE];
            if case.architecture == Architecture::Matryoshka {
                widths.extend(PREFIXES);
            }
            widths
                .into_iter()
                .map(|w| squared_error(m, x, y, &f, w))
                .sum::<f64>()
                / variance
        }
    };
    (value, selected)
}

/// A transcoder of the case's shape with every tensor random (W_dec non-zero, so the encoder
/// sees a gradient), and the rows x and targets y.
fn setup(case: &Case) -> (SaeParams, Vec<f32>, Vec<f32>) {
    let (d_in, d_out) = (case.d_in, case.d_out);
    let mut r = rng(41 + d_in as u64);
    let init = if case.relu_family() {
        SaeParams::init_relu(d_in, D_SAE, case.candidates(), 3)
    } else {
        SaeParams::init_topk(d_in, D_SAE, case.candidates(), 3)
    };
    let mut params = init.into_transcoder(d_out, random_vec(&mut r, D_SAE * d_out, 0.4), false);
    params.b_enc = random_vec(&mut r, D_SAE, 0.1);
    params.b_dec = random_vec(&mut r, d_out, 0.3);
    if case.skip {
        params.transcoder = Some(Transcoding {
            d_out,
            w_skip: Some(random_vec(&mut r, d_out * d_in, 0.2)),
        });
    }
    let x = random_vec(&mut r, ROWS * d_in, 1.0);
    let y = random_vec(&mut r, ROWS * d_out, 1.0);
    (params, x, y)
}

/// The trainer of the case's architecture (AuxK off).
fn trainer<'g>(gpu: &'g Gpu, case: &Case, params: &SaeParams) -> Trainer<'g> {
    let trainer = Trainer::new(gpu, params, ROWS, AdamConfig::default(), 1 << 30, None).unwrap();
    match case.architecture {
        Architecture::BatchTopK => batch_topk::attach(trainer, K, 0.0).unwrap(),
        Architecture::Matryoshka => matryoshka::attach(trainer, K, 0.0, &PREFIXES).unwrap(),
        Architecture::Relu => relu::attach(trainer, None).unwrap(),
        Architecture::JumpRelu => {
            let config = JumpReluConfig {
                bandwidth: 0.05,
                penalty: L0Penalty::Tanh,
                param: ThresholdParam::Direct,
                clip: None,
            };
            jumprelu::attach(trainer, config, &[THETA; D_SAE]).unwrap()
        }
        Architecture::TopK => trainer,
    }
}

#[test]
fn every_architecture_as_a_transcoder_matches_finite_differences() {
    let Some(gpu) = gpu() else { return };
    let mut cases = Vec::new();
    for architecture in [
        Architecture::TopK,
        Architecture::BatchTopK,
        Architecture::Matryoshka,
        Architecture::Relu,
        Architecture::JumpRelu,
    ] {
        // d_out 5 takes the narrow code-gradient kernel, 300 the wide one.
        for (d_in, d_out, stride) in [(7, 5, 1), (33, 300, 13)] {
            cases.push(Case {
                architecture,
                d_in,
                d_out,
                skip: true,
                stride,
            });
        }
    }
    cases.push(Case {
        architecture: Architecture::TopK,
        d_in: 6,
        d_out: 9,
        skip: false,
        stride: 1,
    });
    for case in &cases {
        check(gpu, case);
    }
}

fn check(gpu: &Gpu, case: &Case) {
    let name = case.name();
    let (params, x, y) = setup(case);
    let mut trainer = trainer(gpu, case, &params);
    let mut feed = Feed::paired(gpu, ROWS, case.d_in, case.d_out).unwrap();
    let args = MemberStep {
        scale: 1.0,
        target_scale: 1.0,
        lr: 0.0,
        step: 1,
        with_metrics: false,
        penalty: LAMBDA,
    };
    feed.step_pairs(&x, &y, &mut trainer, args).unwrap();
    let mut got = trainer.gradients().unwrap();
    if case.architecture == Architecture::JumpRelu {
        got.remove(4); // the thresholds' pseudo-gradient: tests/architecture_gradients.rs
    }
    let zeros = vec![0.0; case.d_out * case.d_in];
    let base = Model {
        tensors: [
            to_f64(&params.w_enc),
            to_f64(&params.b_enc),
            to_f64(&params.w_dec),
            to_f64(&params.b_dec),
            to_f64(params.w_skip().unwrap_or(&zeros)),
        ],
        d_in: case.d_in,
        d_out: case.d_out,
    };
    let tensors = if case.skip { 5 } else { 4 };
    assert_eq!(got.len(), tensors, "{name}: gradients returned");
    let (x64, y64) = (to_f64(&x), to_f64(&y));
    let (_, selected) = loss(case, &base, &x64, &y64);
    let eps = 1e-5;
    for (t, tensor) in ["W_enc", "b_enc", "W_dec", "b_dec", "W_skip"]
        .iter()
        .enumerate()
        .take(tensors)
    {
        let fd: Vec<f64> = (0..base.tensors[t].len())
            .map(|j| {
                if j % case.stride != 0 {
                    return 0.0;
                }
                let (mut plus, mut minus) = (base.clone(), base.clone());
                plus.tensors[t][j] += eps;
                minus.tensors[t][j] -= eps;
                let (up, up_sel) = loss(case, &plus, &x64, &y64);
                let (down, down_sel) = loss(case, &minus, &x64, &y64);
                match up_sel == selected && down_sel == selected {
                    true => (up - down) / (2.0 * eps),
                    false => f64::NAN,
                }
            })
            .collect();
        common::assert_gradient_close(&format!("{name} {tensor}"), &fd, &got[t], case.stride);
    }
}
