//! ReLU + L1's own kernels against f64 references at unaligned shapes, outputs NaN-poisoned:
//! decoder row norms (a block of a split dictionary included) and gradient-norm clipping. The
//! penalty's gradient kernels are checked through the whole loss gradient
//! (tests/architecture_gradients.rs).

mod common;

use common::{assert_close, gpu, random_vec, rng, POISON};
use sae_wgpu::gpu::kernels::penalty::{launch_clip_factor, launch_row_norms, launch_scale_by_slot};
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
