//! The kernels SAELens variants add to the forward pass, against f64 CPU references at
//! unaligned shapes: per-row input normalisation (constant norm, layer norm) and its inverse,
//! and the gated activation. Statistics outputs are NaN-poisoned before each run.

mod common;

use common::{assert_close, gpu, random_vec, rng, POISON};
use sae_wgpu::gpu::kernels::gated::{launch_gate, GateParams};
use sae_wgpu::gpu::kernels::input_norm::{launch_denormalize_rows, launch_normalize_rows, RowNorm};
use sae_wgpu::gpu::Recorder;

const SHAPES: [(usize, usize); 5] = [(1, 2), (7, 33), (33, 7), (3, 577), (65, 64)];

/// (normalised x, per-row stats) as SAELens computes them, in f64.
fn reference(x: &[f32], rows: usize, d: usize, norm: RowNorm) -> (Vec<f64>, Vec<f64>) {
    let mut out = Vec::with_capacity(rows * d);
    let mut stats = Vec::with_capacity(rows * 2);
    for row in x.chunks_exact(d).take(rows) {
        let row: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
        match norm {
            RowNorm::ConstantNormRescale => {
                let c = (d as f64).sqrt() / row.iter().map(|v| v * v).sum::<f64>().sqrt();
                out.extend(row.iter().map(|v| v * c));
                stats.extend([c, 0.0]);
            }
            RowNorm::LayerNorm => {
                let mu = row.iter().sum::<f64>() / d as f64;
                let var = row.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / (d as f64 - 1.0);
                let sigma = var.sqrt();
                out.extend(row.iter().map(|v| (v - mu) / (sigma + 1e-5)));
                stats.extend([mu, sigma]);
            }
        }
    }
    (out, stats)
}

#[test]
fn row_normalisation_and_its_inverse_match_the_reference() {
    let Some(gpu) = gpu() else { return };
    for norm in [RowNorm::ConstantNormRescale, RowNorm::LayerNorm] {
        for (rows, d) in SHAPES {
            let mut r = rng((rows * 1000 + d) as u64);
            // Rows of very different scales and offsets, as real residual streams have.
            let x: Vec<f32> = random_vec(&mut r, rows * d, 1.0)
                .iter()
                .enumerate()
                .map(|(i, v)| v * (1.0 + (i / d) as f32 * 3.0) + 0.5)
                .collect();
            let (want_x, want_stats) = reference(&x, rows, d, norm);
            let x_buf = gpu.upload("x", &x).unwrap();
            let stats = gpu.storage::<f32>("row_stats", rows * 2).unwrap();
            gpu.fill_u32(&stats, POISON);
            let mut rec = Recorder::new(gpu, "test");
            launch_normalize_rows(&mut rec, norm, &x_buf, &stats, rows, d).unwrap();
            rec.submit().unwrap();
            let got: Vec<f32> = gpu.read(&x_buf).unwrap();
            let got_stats: Vec<f32> = gpu.read(&stats).unwrap();
            let what = format!("{norm:?} {rows}×{d}");
            assert_close(&format!("{what}: x"), &got, &want_x, 1e-5);
            assert_close(&format!("{what}: stats"), &got_stats, &want_stats, 1e-5);

            // The inverse applied to arbitrary reconstructions, with the same statistics.
            let x_hat = random_vec(&mut r, rows * d, 2.0);
            let want_hat: Vec<f64> = x_hat
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let (a, b) = (want_stats[2 * (i / d)], want_stats[2 * (i / d) + 1]);
                    match norm {
                        RowNorm::ConstantNormRescale => f64::from(v) / a,
                        RowNorm::LayerNorm => f64::from(v) * b + a,
                    }
                })
                .collect();
            let hat_buf = gpu.upload("x_hat", &x_hat).unwrap();
            let mut rec = Recorder::new(gpu, "test");
            launch_denormalize_rows(&mut rec, norm, &hat_buf, &stats, rows, d).unwrap();
            rec.submit().unwrap();
            let got_hat: Vec<f32> = gpu.read(&hat_buf).unwrap();
            assert_close(&format!("{what}: x_hat"), &got_hat, &want_hat, 1e-5);
        }
    }
}

#[test]
fn gated_activation_matches_the_reference() {
    let Some(gpu) = gpu() else { return };
    for (rows, cols) in SHAPES {
        let mut r = rng((rows * 7 + cols) as u64);
        let h = random_vec(&mut r, rows * cols, 1.0);
        let b_gate = random_vec(&mut r, cols, 0.5);
        let r_mag = random_vec(&mut r, cols, 0.5);
        let b_mag = random_vec(&mut r, cols, 0.5);
        let mag_scale: Vec<f32> = r_mag.iter().map(|v| v.exp()).collect();
        let want: Vec<f64> = h
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let j = i % cols;
                let (v, gate) = (f64::from(v), f64::from(b_gate[j]));
                if v + gate > 0.0 {
                    (f64::from(r_mag[j]).exp() * v + f64::from(b_mag[j])).max(0.0)
                } else {
                    0.0
                }
            })
            .collect();
        let h_buf = gpu.upload("h", &h).unwrap();
        let (g, s, m) = (
            gpu.upload("b_gate", &b_gate).unwrap(),
            gpu.upload("mag_scale", &mag_scale).unwrap(),
            gpu.upload("b_mag", &b_mag).unwrap(),
        );
        let mut rec = Recorder::new(gpu, "test");
        let gate = GateParams {
            b_gate: &g,
            mag_scale: &s,
            b_mag: &m,
        };
        launch_gate(&mut rec, &h_buf, rows, cols, gate).unwrap();
        rec.submit().unwrap();
        let got: Vec<f32> = gpu.read(&h_buf).unwrap();
        assert_close(&format!("gate {rows}×{cols}"), &got, &want, 1e-5);
    }
}
