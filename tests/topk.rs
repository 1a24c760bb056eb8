//! TopK against the reference: indices must match exactly (ties go to the lower index). Every
//! case runs both selection paths (radix select, and one invocation per row where k allows).

mod common;

use common::reference::topk;
use common::{gpu, rng, POISON};
use rand::Rng;
use sae_wgpu::gpu::kernels::topk::{force_path, launch_topk, TopKPath, MAX_K, NARROW_K};
use sae_wgpu::gpu::Recorder;

fn run(h: &[f32], rows: usize, cols: usize, k: usize, eligible: Option<&[u32]>) {
    for path in [TopKPath::Radix, TopKPath::Narrow] {
        if path == TopKPath::Narrow && k > NARROW_K {
            continue;
        }
        force_path(path);
        run_path(h, rows, cols, k, eligible, path);
    }
    force_path(TopKPath::Auto);
}

fn run_path(
    h: &[f32],
    rows: usize,
    cols: usize,
    k: usize,
    eligible: Option<&[u32]>,
    path: TopKPath,
) {
    let Some(gpu) = gpu() else { return };
    let h_buf = gpu.upload("h", h).unwrap();
    let idx = gpu.storage::<u32>("top_idx", rows * k).unwrap();
    let val = gpu.storage::<f32>("top_val", rows * k).unwrap();
    gpu.fill_u32(&idx, POISON);
    gpu.fill_u32(&val, POISON);
    let mask = eligible.map(|m| gpu.upload("eligible", m).unwrap());
    let mut rec = Recorder::new(gpu, "test");
    launch_topk(&mut rec, &h_buf, rows, cols, k, &idx, &val, mask.as_ref()).unwrap();
    rec.submit().unwrap();
    let got_idx: Vec<u32> = gpu.read(&idx).unwrap();
    let got_val: Vec<f32> = gpu.read(&val).unwrap();
    let (want_idx, want_val) = topk(h, rows, cols, k, eligible);
    for e in 0..rows * k {
        assert_eq!(
            (got_idx[e], got_val[e].to_bits()),
            (want_idx[e], want_val[e].to_bits()),
            "{path:?} rows {rows} cols {cols} k {k}: entry {e} (row {}, rank {}) gpu ({}, {}) vs reference ({}, {})",
            e / k,
            e % k,
            got_idx[e],
            got_val[e],
            want_idx[e],
            want_val[e]
        );
    }
}

/// Values from a few levels (many exact ties) with negatives (ReLU to 0, tied at 0).
fn tied_values(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = rng(seed);
    (0..n)
        .map(|_| f32::from(rng.random_range(-6i8..10)) * 0.25)
        .collect()
}

fn continuous_values(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = rng(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..3.0)).collect()
}

#[test]
fn topk_matches_reference_on_odd_shapes() {
    for (rows, cols) in [(1, 1), (3, 7), (5, 33), (4, 577), (2, 4099)] {
        for k in [1, 2, 7, 32, 256] {
            if k > cols {
                continue;
            }
            run(
                &continuous_values((rows * cols + k) as u64, rows * cols),
                rows,
                cols,
                k,
                None,
            );
            run(
                &tied_values((rows * cols * 7 + k) as u64, rows * cols),
                rows,
                cols,
                k,
                None,
            );
        }
    }
}

#[test]
fn topk_with_k_equal_to_width() {
    for cols in [1, 7, 33, 200, MAX_K] {
        run(&tied_values(cols as u64, 3 * cols), 3, cols, cols, None);
    }
}

#[test]
fn topk_all_negative_rows_pick_lowest_indices() {
    let cols = 300;
    let h = vec![-1.0f32; 2 * cols];
    run(&h, 2, cols, 17, None);
}

#[test]
fn topk_masked_only_picks_eligible_latents() {
    let (rows, cols, k) = (6, 577, 9);
    let mut rng = rng(11);
    let eligible: Vec<u32> = (0..cols)
        .map(|_| u32::from(rng.random_range(0..4) == 0))
        .collect();
    run(
        &continuous_values(12, rows * cols),
        rows,
        cols,
        k,
        Some(&eligible),
    );
}

#[test]
fn topk_masked_with_fewer_eligible_than_k_fills_with_zeros() {
    let (rows, cols, k) = (4, 40, 9);
    let mut eligible = vec![0u32; cols];
    for i in [3, 17, 38] {
        eligible[i] = 1;
    }
    run(
        &continuous_values(13, rows * cols),
        rows,
        cols,
        k,
        Some(&eligible),
    );
}

#[test]
fn topk_handles_k_up_to_max() {
    run(&tied_values(99, 2 * 1000), 2, 1000, MAX_K, None);
}

#[test]
fn topk_many_rows_fold_the_grid() {
    // More rows than one grid dimension allows would be slow on lavapipe; 70 rows with a tiny
    // width still runs the folded-row arithmetic through Grid::linear's 1-D path, and the
    // dispatch tests in src/gpu/dispatch.rs cover the 2-D fold.
    run(&continuous_values(3, 70 * 5), 70, 5, 3, None);
}

#[test]
fn topk_rejects_bad_k() {
    let Some(gpu) = gpu() else { return };
    let h = gpu.storage::<f32>("h", 10).unwrap();
    let mut rec = Recorder::new(gpu, "test");
    let err = launch_topk(&mut rec, &h, 1, 10, 0, &h, &h, None).unwrap_err();
    assert!(err.to_string().contains("k = 0"), "{err}");
    let err = launch_topk(&mut rec, &h, 1, 10, 11, &h, &h, None).unwrap_err();
    assert!(err.to_string().contains("exceeds the 10 latents"), "{err}");
}

#[test]
fn topk_handles_wide_dictionaries() {
    // d_sae = 131072 with k = 256, continuous and heavily tied values.
    let cols = 131_072;
    run(&continuous_values(77, 2 * cols), 2, cols, 256, None);
    run(&tied_values(78, cols), 1, cols, 256, None);
}
