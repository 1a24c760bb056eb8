//! The ReLU family's penalty kernels against f64 references at unaligned shapes: decoder row
//! norms (a block of a split dictionary included; NaN-poisoned), gradient-norm clipping, and
//! the L1 and tanh penalties' gradients on the codes and decoder rows (which add to gradients
//! already there: entries and rows outside the block must keep their bits). They are also
//! checked through the whole loss gradient (tests/architecture_gradients.rs).

mod common;

use common::{assert_close, gpu, random_vec, rng, POISON};
use rand::seq::SliceRandom;
use sae_wgpu::gpu::kernels::backward::{launch_reverse_index, BackwardShape, ReverseIndex};
use sae_wgpu::gpu::kernels::penalty::{
    launch_clip_factor, launch_penalty_code_grad, launch_penalty_decoder_grad, launch_row_norms,
    launch_scale_by_slot, CodePenalty,
};
use sae_wgpu::gpu::kernels::reduce::Reducer;
use sae_wgpu::gpu::kernels::LatentRange;
use sae_wgpu::gpu::Recorder;

#[test]
fn row_norms_match_reference() {
    let Some(gpu) = gpu() else { return };
    for (rows, d_in, start) in [(1, 1, 0), (7, 33, 0), (33, 577, 5), (300, 7, 2)] {
        let w = random_vec(&mut rng((rows * d_in) as u64), rows * d_in, 1.5);
        let w_buf = gpu.upload("w_dec", &w).unwrap();
        let norms = gpu.storage::<f32>("norms", start + rows).unwrap();
        gpu.fill_u32(&norms, POISON);
        let mut rec = Recorder::new(gpu, "row norms");
        let block = LatentRange { start, len: rows };
        launch_row_norms(&mut rec, &w_buf, block, d_in, &norms).unwrap();
        rec.submit().unwrap();
        let got: Vec<f32> = gpu.read(&norms).unwrap();
        let want: Vec<f64> = w
            .chunks(d_in)
            .map(|row| {
                row.iter()
                    .map(|v| f64::from(*v).powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .collect();
        assert_close(&format!("norms {rows}x{d_in}"), &got[start..], &want, 1e-5);
    }
}

#[test]
fn clipping_scales_every_gradient_to_the_global_norm() {
    let Some(gpu) = gpu() else { return };
    let reducer = Reducer::new(gpu).unwrap();
    for (clip, scale) in [(1.0f32, 1.0f32), (1.0, 0.01), (1e3, 1.0)] {
        let sizes = [1usize, 33, 577];
        let grads: Vec<Vec<f32>> = sizes
            .iter()
            .map(|&n| random_vec(&mut rng(n as u64), n, scale))
            .collect();
        let buffers: Vec<_> = grads
            .iter()
            .map(|g| gpu.upload("grad", g).unwrap())
            .collect();
        let (first, out) = (2, 0);
        let stats = gpu.storage::<f32>("stats", first + sizes.len()).unwrap();
        gpu.fill_u32(&stats, POISON);
        let mut rec = Recorder::new(gpu, "clip");
        for (i, (b, &n)) in buffers.iter().zip(&sizes).enumerate() {
            reducer
                .launch_sum_sq(&mut rec, b, n, &stats, first + i)
                .unwrap();
        }
        launch_clip_factor(&mut rec, &stats, first, sizes.len(), out, clip).unwrap();
        for (b, &n) in buffers.iter().zip(&sizes) {
            launch_scale_by_slot(&mut rec, b, n, &stats, out).unwrap();
        }
        rec.submit().unwrap();
        let norm: f64 = grads
            .iter()
            .flatten()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            .sqrt();
        let factor = (f64::from(clip) / norm).min(1.0);
        for (b, g) in buffers.iter().zip(&grads) {
            let want: Vec<f64> = g.iter().map(|v| f64::from(*v) * factor).collect();
            let got: Vec<f32> = gpu.read(b).unwrap();
            assert_close(&format!("clipped to {clip}"), &got, &want, 1e-5);
        }
    }
}

/// ∂/∂f and ∂/∂n of one entry's penalty (per unit of the coefficient).
fn slopes(penalty: CodePenalty, f: f64, n: f64) -> (f64, f64) {
    match penalty {
        CodePenalty::L1 => (n, f),
        CodePenalty::Tanh { scale } => {
            let s = f64::from(scale);
            let sech_sq = 1.0 - (s * f * n).tanh().powi(2);
            (s * n * sech_sq, s * f * sech_sq)
        }
    }
}

#[test]
fn penalty_gradients_match_reference() {
    let Some(gpu) = gpu() else { return };
    // (rows, k, d_sae, d_in, block start, block latents)
    let shapes = [
        (1, 1, 1, 1, 0, 1),
        (7, 3, 33, 5, 0, 33),
        (33, 7, 577, 33, 100, 300),
        (300, 2, 40, 7, 33, 7),
    ];
    let penalties = [CodePenalty::L1, CodePenalty::Tanh { scale: 4.0 }];
    for (n, &(rows, k, d_sae, d_in, start, len)) in shapes.iter().enumerate() {
        for penalty in penalties {
            let name = format!("{penalty:?} {rows}x{k} of {d_sae}, block {start}+{len}");
            let mut r = rng(n as u64 + 70);
            // Distinct latents per row; some codes ≤ 0 (not fired).
            let mut latents: Vec<u32> = (0..d_sae as u32).collect();
            let mut top_idx = Vec::with_capacity(rows * k);
            for _ in 0..rows {
                latents.shuffle(&mut r);
                top_idx.extend_from_slice(&latents[..k]);
            }
            let top_val: Vec<f32> = random_vec(&mut r, rows * k, 1.0)
                .iter()
                .map(|v| v + 0.3)
                .collect();
            let norms: Vec<f32> = random_vec(&mut r, d_sae, 0.2)
                .iter()
                .map(|v| 0.5 + v)
                .collect();
            let w_dec = random_vec(&mut r, len * d_in, 0.5);
            // Small gradients already there, so the penalty's share dominates the comparison.
            let code_grad0 = random_vec(&mut r, rows * k, 0.01);
            let grad_w0 = random_vec(&mut r, len * d_in, 0.01);
            let coeff = 0.7 / rows as f32;
            let shape = BackwardShape {
                rows,
                d_in,
                d_out: d_in,
                d_sae,
                k,
            };
            let index = ReverseIndex::new(gpu, shape).unwrap();
            let idx_b = gpu.upload("top_idx", &top_idx).unwrap();
            let val_b = gpu.upload("top_val", &top_val).unwrap();
            let norms_b = gpu.upload("norms", &norms).unwrap();
            let w_b = gpu.upload("w_dec", &w_dec).unwrap();
            let code_grad = gpu.upload("code_grad", &code_grad0).unwrap();
            let grad_w = gpu.upload("grad_w_dec", &grad_w0).unwrap();
            let block = LatentRange { start, len };
            let mut rec = Recorder::new(gpu, "penalty grads");
            launch_reverse_index(&mut rec, &idx_b, &index).unwrap();
            launch_penalty_code_grad(
                &mut rec,
                &idx_b,
                &val_b,
                &norms_b,
                block,
                rows * k,
                penalty,
                coeff,
                &code_grad,
            )
            .unwrap();
            launch_penalty_decoder_grad(
                &mut rec, &index, &val_b, &w_b, &norms_b, block, penalty, coeff, &grad_w,
            )
            .unwrap();
            rec.submit().unwrap();

            let c = f64::from(coeff);
            let in_block = |latent: u32| (start..start + len).contains(&(latent as usize));
            let mut want_codes: Vec<f64> = code_grad0.iter().map(|&v| f64::from(v)).collect();
            let mut norm_slope = vec![0.0f64; len];
            for e in 0..rows * k {
                let (latent, f) = (top_idx[e], f64::from(top_val[e]));
                if !in_block(latent) || f <= 0.0 {
                    continue;
                }
                let n = f64::from(norms[latent as usize]);
                let (d_f, d_n) = slopes(penalty, f, n);
                want_codes[e] += c * d_f;
                norm_slope[latent as usize - start] += d_n;
            }
            let got_codes: Vec<f32> = gpu.read(&code_grad).unwrap();
            for e in 0..rows * k {
                if !in_block(top_idx[e]) || top_val[e] <= 0.0 {
                    assert_eq!(
                        got_codes[e].to_bits(),
                        code_grad0[e].to_bits(),
                        "{name}: entry {e} outside the block or not fired changed"
                    );
                }
            }
            assert_close(&format!("{name} codes"), &got_codes, &want_codes, 1e-5);
            let want_w: Vec<f64> = (0..len * d_in)
                .map(|j| {
                    let i = j / d_in;
                    let n = f64::from(norms[start + i]);
                    f64::from(grad_w0[j]) + c * norm_slope[i] * f64::from(w_dec[j]) / n
                })
                .collect();
            let got_w: Vec<f32> = gpu.read(&grad_w).unwrap();
            assert_close(&format!("{name} decoder"), &got_w, &want_w, 1e-5);
        }
    }
}
