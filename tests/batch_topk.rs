//! BatchTopK's batch-wide selection against an f64 reference: the threshold, the kept entries
//! (exactly, ties at the threshold kept) and θ's moving average, at unaligned sizes, with
//! zeros and repeated values among the candidates and the state poisoned first.

mod common;

use common::reference::batch_topk;
use common::{gpu, rng, POISON};
use rand::Rng;
use sae_wgpu::gpu::kernels::batch_topk::{launch_batch_topk, state};
use sae_wgpu::gpu::Recorder;

#[test]
fn batch_topk_matches_reference() {
    let Some(gpu) = gpu() else { return };
    for (n, keep) in [
        (1, 1),
        (7, 3),
        (33, 33),
        (33, 40),
        (577, 100),
        (5000, 1234),
        (4096, 1),
    ] {
        let mut r = rng(n as u64 + keep as u64);
        // ReLU'd candidates: a quarter zeros, some values repeated.
        let values: Vec<f32> = (0..n)
            .map(|i| match i % 4 {
                0 => 0.0,
                1 if i > 8 => (i % 5) as f32 * 0.25,
                _ => r.random_range(0.0f32..3.0),
            })
            .collect();
        let buf = gpu.upload("top_val", &values).unwrap();
        let st = gpu.storage::<f32>("state", state::COUNT).unwrap();
        gpu.fill_u32(&st, POISON);
        // θ = 0 is the first step: θ becomes the smallest kept value.
        let theta0 = if n % 2 == 1 { 0.5f32 } else { 0.0 };
        let mut init = vec![f32::NAN; state::COUNT];
        init[state::THETA] = theta0;
        gpu.write(&st, &init).unwrap();
        let mut rec = Recorder::new(gpu, "batch topk");
        launch_batch_topk(&mut rec, &buf, n, keep, 0.99, &st).unwrap();
        rec.submit().unwrap();
        let got: Vec<f32> = gpu.read(&buf).unwrap();
        let got_state: Vec<f32> = gpu.read(&st).unwrap();

        let as_f64: Vec<f64> = values.iter().map(|&v| f64::from(v)).collect();
        let (t, kept, smallest) = batch_topk(&as_f64, keep);
        let got_f64: Vec<f64> = got.iter().map(|&v| f64::from(v)).collect();
        assert_eq!(got_f64, kept, "kept entries, n {n} keep {keep}");
        assert_eq!(
            f64::from(got_state[state::BATCH_THRESHOLD]),
            t,
            "threshold, n {n}"
        );
        assert_eq!(
            f64::from(got_state[state::SMALLEST_KEPT]),
            smallest,
            "smallest kept, n {n}"
        );
        let theta = if theta0 == 0.0 {
            smallest
        } else {
            0.99 * f64::from(theta0) + 0.01 * smallest
        };
        let err = (f64::from(got_state[state::THETA]) - theta).abs() / theta.max(1e-30);
        assert!(
            err < 1e-6,
            "theta {} against {theta}",
            got_state[state::THETA]
        );
        let positive = kept.iter().filter(|&&v| v > 0.0).count();
        let available = as_f64.iter().filter(|&&v| v > 0.0).count();
        assert!(positive >= keep.min(available), "kept {positive} of {keep}");
    }
}
