//! Adam and the unit-norm decoder kernels against the f64 reference.

mod common;

use common::reference::adam;
use common::{assert_close, gpu, random_vec, rng, to_f64, POISON};
use sae_wgpu::gpu::kernels::optim::{
    launch_adam, launch_normalize_rows, launch_remove_parallel_grad, AdamConfig, NORM_EPS,
};
use sae_wgpu::gpu::Recorder;

#[test]
fn adam_matches_reference_over_several_steps() {
    let Some(gpu) = gpu() else { return };
    for n in [1, 7, 577, 70_001] {
        let mut rng = rng(n as u64);
        let param = random_vec(&mut rng, n, 1.0);
        let config = AdamConfig::default();
        let lr = 3e-3;
        let p_buf = gpu.upload("param", &param).unwrap();
        let m_buf = gpu.storage::<f32>("m", n).unwrap();
        let v_buf = gpu.storage::<f32>("v", n).unwrap();
        let mut p_ref = to_f64(&param);
        let mut m_ref = vec![0.0; n];
        let mut v_ref = vec![0.0; n];
        for step in 1..=3u64 {
            let grad = random_vec(&mut rng, n, 0.5);
            let g_buf = gpu.upload("grad", &grad).unwrap();
            let mut rec = Recorder::new(gpu, "adam");
            launch_adam(&mut rec, &p_buf, &g_buf, &m_buf, &v_buf, &config, lr, step).unwrap();
            rec.submit().unwrap();
            adam(
                &mut p_ref,
                &to_f64(&grad),
                &mut m_ref,
                &mut v_ref,
                lr,
                0.9,
                0.999,
                1e-8,
                step,
            );
        }
        assert_close(
            &format!("adam param n={n}"),
            &gpu.read::<f32>(&p_buf).unwrap(),
            &p_ref,
            1e-5,
        );
        assert_close(
            &format!("adam exp_avg n={n}"),
            &gpu.read::<f32>(&m_buf).unwrap(),
            &m_ref,
            1e-5,
        );
        assert_close(
            &format!("adam exp_avg_sq n={n}"),
            &gpu.read::<f32>(&v_buf).unwrap(),
            &v_ref,
            1e-5,
        );
    }
}

#[test]
fn decoder_constraint_kernels_match_reference() {
    let Some(gpu) = gpu() else { return };
    for (rows, cols) in [(1, 1), (7, 33), (65, 577), (3, 1000)] {
        let mut rng = rng((rows * cols) as u64);
        let w = random_vec(&mut rng, rows * cols, 1.0);
        let g = random_vec(&mut rng, rows * cols, 1.0);
        let w_buf = gpu.upload("w_dec", &w).unwrap();
        let g_buf = gpu.upload("grad", &g).unwrap();
        let mut rec = Recorder::new(gpu, "constraint");
        launch_remove_parallel_grad(&mut rec, &w_buf, &g_buf, rows, cols).unwrap();
        launch_normalize_rows(&mut rec, &w_buf, rows, cols).unwrap();
        rec.submit().unwrap();

        let mut g_ref = to_f64(&g);
        let mut w_ref = to_f64(&w);
        for r in 0..rows {
            let row = r * cols..(r + 1) * cols;
            let dot: f64 = g_ref[row.clone()]
                .iter()
                .zip(&w_ref[row.clone()])
                .map(|(a, b)| a * b)
                .sum();
            let norm_sq: f64 = w_ref[row.clone()].iter().map(|v| v * v).sum();
            for c in row.clone() {
                g_ref[c] -= dot / norm_sq * w_ref[c];
            }
            let scale = 1.0 / (norm_sq.sqrt() + f64::from(NORM_EPS));
            for c in row {
                w_ref[c] *= scale;
            }
        }
        // The projected gradient of a 1-wide row is exactly zero: compare absolutely there.
        assert_close(
            &format!("parallel-free grad {rows}x{cols}"),
            &gpu.read::<f32>(&g_buf).unwrap(),
            &g_ref,
            1e-5,
        );
        assert_close(
            &format!("unit rows {rows}x{cols}"),
            &gpu.read::<f32>(&w_buf).unwrap(),
            &w_ref,
            1e-5,
        );
    }
}

#[test]
fn adam_rejects_step_zero() {
    let Some(gpu) = gpu() else { return };
    let b = gpu.storage::<f32>("p", 4).unwrap();
    gpu.fill_u32(&b, POISON);
    let mut rec = Recorder::new(gpu, "adam");
    assert!(launch_adam(&mut rec, &b, &b, &b, &b, &AdamConfig::default(), 1e-3, 0).is_err());
}
