//! Whole training steps on the GPU against the same steps in f64 on the CPU: forward, FVU
//! gradient, parallel-gradient removal, Adam, decoder renormalisation.

mod common;

use common::reference::{adam, encode, fvu_grads, topk, RefSae};
use common::{assert_close, gpu, random_vec, rng, to_f64};
use sae_wgpu::gpu::kernels::optim::{AdamConfig, NORM_EPS};
use sae_wgpu::sae::params::{Activation, SaeParams};
use sae_wgpu::sae::trainer::Trainer;
use sae_wgpu::sae::trainer::{Feed, MemberStep};

fn reference_step(
    sae: &mut RefSae,
    moments: &mut [(Vec<f64>, Vec<f64>); 4],
    x: &[f64],
    rows: usize,
    k: usize,
    lr: f64,
    step: u64,
) {
    let h = encode(x, rows, sae);
    let h32: Vec<f32> = h.iter().map(|&v| v as f32).collect();
    let (idx, _) = topk(&h32, rows, sae.d_sae, k, None);
    let val: Vec<f64> = idx
        .iter()
        .enumerate()
        .map(|(e, &i)| h[(e / k) * sae.d_sae + i as usize].max(0.0))
        .collect();
    let mut g = fvu_grads(x, rows, &idx, &val, k, sae);
    let d = sae.d_in;
    for i in 0..sae.d_sae {
        let row = i * d..(i + 1) * d;
        let dot: f64 = g.w_dec[row.clone()]
            .iter()
            .zip(&sae.w_dec[row.clone()])
            .map(|(a, b)| a * b)
            .sum();
        let nn: f64 = sae.w_dec[row.clone()].iter().map(|v| v * v).sum();
        for c in row {
            g.w_dec[c] -= dot / nn * sae.w_dec[c];
        }
    }
    let params = [
        &mut sae.w_enc,
        &mut sae.b_enc,
        &mut sae.w_dec,
        &mut sae.b_dec,
    ];
    let grads = [&g.w_enc, &g.b_enc, &g.w_dec, &g.b_dec];
    for ((p, grad), (m, v)) in params.into_iter().zip(grads).zip(moments.iter_mut()) {
        adam(p, grad, m, v, lr, 0.9, 0.999, 1e-8, step);
    }
    for i in 0..sae.d_sae {
        let row = i * d..(i + 1) * d;
        let norm: f64 = sae.w_dec[row.clone()]
            .iter()
            .map(|v| v * v)
            .sum::<f64>()
            .sqrt();
        for c in row {
            sae.w_dec[c] /= norm + f64::from(NORM_EPS);
        }
    }
}

#[test]
fn gpu_training_steps_match_cpu_reference() {
    let Some(gpu) = gpu() else { return };
    let (rows, d_in, d_sae, k) = (9, 6, 11, 3);
    let mut params = SaeParams::init_topk(d_in, d_sae, k, 3);
    let mut r = rng(4);
    params.b_enc = random_vec(&mut r, d_sae, 0.2)
        .iter()
        .map(|v| v + 0.3)
        .collect();
    params.b_dec = random_vec(&mut r, d_in, 0.2);
    let mut reference = RefSae {
        d_in,
        d_sae,
        w_enc: to_f64(&params.w_enc),
        b_enc: to_f64(&params.b_enc),
        w_dec: to_f64(&params.w_dec),
        b_dec: to_f64(&params.b_dec),
    };
    let mut moments: [(Vec<f64>, Vec<f64>); 4] = [
        (vec![0.0; d_in * d_sae], vec![0.0; d_in * d_sae]),
        (vec![0.0; d_sae], vec![0.0; d_sae]),
        (vec![0.0; d_sae * d_in], vec![0.0; d_sae * d_in]),
        (vec![0.0; d_in], vec![0.0; d_in]),
    ];
    let mut trainer =
        Trainer::new(gpu, &params, rows, AdamConfig::default(), 10_000_000, None).unwrap();
    let mut feed = Feed::new(gpu, rows, d_in).unwrap();
    for step in 1..=4u64 {
        let x = random_vec(&mut r, rows * d_in, 1.5);
        let lr = 1e-2;
        let args = MemberStep {
            scale: 1.0,
            target_scale: 1.0,
            lr,
            step,
            with_metrics: false,
            penalty: 0.0,
        };
        feed.step_rows(&x, &mut trainer, args).unwrap();
        reference_step(&mut reference, &mut moments, &to_f64(&x), rows, k, lr, step);
    }
    let got = trainer.sae.download(gpu).unwrap();
    assert_eq!(got.activation, Activation::TopK { k });
    assert_close("W_enc after 4 steps", &got.w_enc, &reference.w_enc, 1e-4);
    assert_close("b_enc after 4 steps", &got.b_enc, &reference.b_enc, 1e-4);
    assert_close("W_dec after 4 steps", &got.w_dec, &reference.w_dec, 1e-4);
    assert_close("b_dec after 4 steps", &got.b_dec, &reference.b_dec, 1e-4);
}
