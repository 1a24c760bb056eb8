//! Loss and metric reductions: float sums within 1e-5 of f64, integer counts exact.

mod common;

use common::reference::{centered_sq, topk};
use common::{assert_close, gpu, random_vec, rng, to_f64, POISON};
use rand::Rng;
use sae_wgpu::gpu::kernels::reduce::{
    launch_aux_scale, launch_dead_mask, launch_fire_counts, launch_row_l0, launch_update_dead,
    Reducer,
};
use sae_wgpu::gpu::Recorder;

#[test]
fn squared_error_and_centred_variance_match_reference() {
    let Some(gpu) = gpu() else { return };
    let reducer = Reducer::new(gpu).unwrap();
    for (rows, cols) in [(1, 1), (7, 33), (33, 577), (1000, 300)] {
        let mut rng = rng((rows + cols) as u64);
        let a = random_vec(&mut rng, rows * cols, 3.0);
        let b = random_vec(&mut rng, rows * cols, 3.0);
        let a_buf = gpu.upload("a", &a).unwrap();
        let b_buf = gpu.upload("b", &b).unwrap();
        let stats = gpu.storage::<f32>("stats", 2).unwrap();
        let col_mean = gpu.storage::<f32>("col_mean", cols).unwrap();
        gpu.fill_u32(&stats, POISON);
        gpu.fill_u32(&col_mean, POISON);
        let mut rec = Recorder::new(gpu, "reduce");
        reducer
            .launch_sum_sq_diff(&mut rec, &a_buf, &b_buf, rows * cols, &stats, 0)
            .unwrap();
        reducer
            .launch_centered_sq(&mut rec, &a_buf, rows, cols, &col_mean, &stats, 1)
            .unwrap();
        rec.submit().unwrap();
        let out: Vec<f32> = gpu.read(&stats).unwrap();
        let sse: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum();
        assert_close(&format!("sse {rows}x{cols}"), &out[..1], &[sse], 1e-5);
        let var = centered_sq(&to_f64(&a), rows, cols);
        assert_close(
            &format!("centred variance {rows}x{cols}"),
            &out[1..],
            &[var],
            1e-5,
        );
        let means: Vec<f64> = (0..cols)
            .map(|c| (0..rows).map(|r| f64::from(a[r * cols + c])).sum::<f64>() / rows as f64)
            .collect();
        assert_close(
            "column means",
            &gpu.read::<f32>(&col_mean).unwrap(),
            &means,
            1e-5,
        );
    }
}

#[test]
fn l0_and_fire_counts_are_exact() {
    let Some(gpu) = gpu() else { return };
    let (rows, cols, k) = (301, 97, 13);
    let mut rng = rng(5);
    // Many values ≤ 0 so some chosen latents do not fire.
    let h: Vec<f32> = (0..rows * cols)
        .map(|_| f32::from(rng.random_range(-20i8..4)))
        .collect();
    let (idx, val) = topk(&h, rows, cols, k, None);
    let idx_buf = gpu.upload("top_idx", &idx).unwrap();
    let val_buf = gpu.upload("top_val", &val).unwrap();
    let l0 = gpu.storage::<u32>("l0", rows).unwrap();
    gpu.fill_u32(&l0, POISON);
    let fire = gpu.storage::<u32>("fire", cols).unwrap();
    let mut rec = Recorder::new(gpu, "counts");
    launch_row_l0(&mut rec, &val_buf, rows, k, &l0).unwrap();
    // Twice: counts accumulate across batches.
    launch_fire_counts(&mut rec, &idx_buf, &val_buf, rows * k, &fire).unwrap();
    launch_fire_counts(&mut rec, &idx_buf, &val_buf, rows * k, &fire).unwrap();
    rec.submit().unwrap();
    let want_l0: Vec<u32> = (0..rows)
        .map(|r| val[r * k..(r + 1) * k].iter().filter(|v| **v > 0.0).count() as u32)
        .collect();
    let mut want_fire = vec![0u32; cols];
    for (i, v) in idx.iter().zip(&val) {
        if *v > 0.0 {
            want_fire[*i as usize] += 2;
        }
    }
    assert_eq!(gpu.read::<u32>(&l0).unwrap(), want_l0);
    assert_eq!(gpu.read::<u32>(&fire).unwrap(), want_fire);
}

#[test]
fn sum_of_squares_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let reducer = Reducer::new(gpu).unwrap();
    for n in [1, 7, 577, 300_001] {
        let a = random_vec(&mut rng(n as u64), n, 2.0);
        let a_buf = gpu.upload("a", &a).unwrap();
        let stats = gpu.storage::<f32>("stats", 1).unwrap();
        gpu.fill_u32(&stats, POISON);
        let mut rec = Recorder::new(gpu, "sum_sq");
        reducer
            .launch_sum_sq(&mut rec, &a_buf, n, &stats, 0)
            .unwrap();
        rec.submit().unwrap();
        let want: f64 = a.iter().map(|v| f64::from(*v).powi(2)).sum();
        assert_close(
            &format!("Σa² n={n}"),
            &gpu.read::<f32>(&stats).unwrap(),
            &[want],
            1e-5,
        );
    }
}

#[test]
fn dead_latent_tracking_matches_reference() {
    let Some(gpu) = gpu() else { return };
    let d_sae = 333;
    let mut rng = rng(8);
    let mut since: Vec<u32> = (0..d_sae).map(|_| rng.random_range(0..3000)).collect();
    since[0] = u32::MAX - 5; // saturates instead of wrapping
    let fired: Vec<u32> = (0..d_sae)
        .map(|_| u32::from(rng.random_range(0..3) == 0))
        .collect();
    let since_buf = gpu.upload("since", &since).unwrap();
    let fired_buf = gpu.upload("fired", &fired).unwrap();
    let eligible = gpu.storage::<u32>("eligible", d_sae).unwrap();
    gpu.fill_u32(&eligible, POISON);
    let dead_count = gpu.upload("dead_count", &[12345u32]).unwrap();
    let stats = gpu.storage::<f32>("stats", 2).unwrap();
    let (rows, threshold, k_aux) = (1000usize, 2500u32, 40usize);
    let mut rec = Recorder::new(gpu, "dead");
    launch_update_dead(&mut rec, &fired_buf, &since_buf, d_sae, rows).unwrap();
    launch_dead_mask(
        &mut rec,
        &since_buf,
        &eligible,
        &dead_count,
        d_sae,
        threshold,
    )
    .unwrap();
    launch_aux_scale(&mut rec, &dead_count, &stats, 1, k_aux).unwrap();
    rec.submit().unwrap();

    for (s, f) in since.iter_mut().zip(&fired) {
        *s = if *f > 0 {
            0
        } else {
            s.saturating_add(rows as u32)
        };
    }
    let want_eligible: Vec<u32> = since.iter().map(|s| u32::from(*s > threshold)).collect();
    let n_dead: u32 = want_eligible.iter().sum();
    assert_eq!(gpu.read::<u32>(&since_buf).unwrap(), since);
    assert_eq!(gpu.read::<u32>(&eligible).unwrap(), want_eligible);
    assert_eq!(gpu.read::<u32>(&dead_count).unwrap(), vec![n_dead]);
    let scale = (f64::from(n_dead) / k_aux as f64).min(1.0);
    assert_close(
        "aux scale",
        &gpu.read::<f32>(&stats).unwrap()[1..],
        &[scale],
        1e-6,
    );
}
