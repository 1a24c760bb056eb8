//! The attribution kernel against an f64 reference at shapes that are not multiples of its
//! workgroup, outputs NaN-poisoned first: gathered pairs, per-head tables (y_step), padded
//! indices (0) and indices beyond a table (NaN, never a quiet 0).

mod common;

use common::{assert_close, gpu, random_vec, rng, POISON};
use rand::Rng;
use sae_wgpu::gpu::kernels::pair_dot::{launch_pair_dot, PairDotShape, NONE};
use sae_wgpu::gpu::Recorder;

/// (rows, ka, kb, dim, y_step)
const SHAPES: [(usize, usize, usize, usize, usize); 5] = [
    (1, 1, 1, 1, 0),
    (7, 33, 5, 577, 0),
    (33, 7, 9, 65, 11),
    (577, 3, 7, 33, 0),
    (5, 9, 1, 64, 577),
];

fn reference(
    x: &[f32],
    y: &[f32],
    ia: &[u32],
    ib: &[u32],
    (rows, ka, kb, dim, y_step): (usize, usize, usize, usize, usize),
) -> Vec<f64> {
    let mut out = vec![0.0f64; rows * kb * ka];
    for r in 0..rows {
        for b in 0..kb {
            for a in 0..ka {
                let (xi, yb) = (ia[r * ka + a], ib[r * kb + b]);
                if xi == NONE || yb == NONE {
                    continue;
                }
                let (xs, ys) = (xi as usize * dim, (yb as usize + a * y_step) * dim);
                out[(r * kb + b) * ka + a] = (0..dim)
                    .map(|t| f64::from(x[xs + t]) * f64::from(y[ys + t]))
                    .sum();
            }
        }
    }
    out
}

#[test]
fn pair_dot_matches_reference() {
    let Some(gpu) = gpu() else { return };
    for (n, &shape) in SHAPES.iter().enumerate() {
        let (rows, ka, kb, dim, y_step) = shape;
        let mut r = rng(300 + n as u64);
        let (nx, ny_base) = (rows * ka + 3, 2 * kb + 5);
        let ny = ny_base + ka * y_step;
        let x = random_vec(&mut r, nx * dim, 1.0);
        let y = random_vec(&mut r, ny * dim, 1.0);
        let mut ia: Vec<u32> = (0..rows * ka)
            .map(|_| r.random_range(0..nx as u32))
            .collect();
        let mut ib: Vec<u32> = (0..rows * kb)
            .map(|_| r.random_range(0..ny_base as u32))
            .collect();
        // Some padded codes on each side.
        for (i, v) in ia.iter_mut().enumerate().filter(|(i, _)| i % 5 == 3) {
            *v = if i % 2 == 0 { NONE } else { *v };
        }
        if let Some(last) = ib.last_mut().filter(|_| rows * kb > 1) {
            *last = NONE;
        }
        let want = reference(&x, &y, &ia, &ib, shape);
        let bufs = (
            gpu.upload("x", &x).unwrap(),
            gpu.upload("y", &y).unwrap(),
            gpu.upload("ia", &ia).unwrap(),
            gpu.upload("ib", &ib).unwrap(),
            gpu.upload("out", &vec![f32::from_bits(POISON); rows * kb * ka])
                .unwrap(),
        );
        let mut rec = Recorder::new(gpu, "pair dot");
        let s = PairDotShape {
            rows,
            ka,
            kb,
            dim,
            y_step,
        };
        launch_pair_dot(&mut rec, &bufs.0, &bufs.1, &bufs.2, &bufs.3, &bufs.4, s).unwrap();
        rec.submit().unwrap();
        let got: Vec<f32> = gpu.read(&bufs.4).unwrap();
        assert_close(&format!("pair_dot {shape:?}"), &got, &want, 1e-5);
    }
}

#[test]
fn an_index_beyond_its_table_is_nan() {
    let Some(gpu) = gpu() else { return };
    let (x, y) = (vec![1.0f32; 2 * 3], vec![1.0f32; 4 * 3]);
    let (ia, ib) = (vec![0u32, 2], vec![1u32]);
    let out = gpu.upload("out", &[0.0f32; 2]).unwrap();
    let mut rec = Recorder::new(gpu, "pair dot range");
    let s = PairDotShape {
        rows: 1,
        ka: 2,
        kb: 1,
        dim: 3,
        y_step: 0,
    };
    let bufs = (
        gpu.upload("x", &x).unwrap(),
        gpu.upload("y", &y).unwrap(),
        gpu.upload("ia", &ia).unwrap(),
        gpu.upload("ib", &ib).unwrap(),
    );
    launch_pair_dot(&mut rec, &bufs.0, &bufs.1, &bufs.2, &bufs.3, &out, s).unwrap();
    rec.submit().unwrap();
    let got: Vec<f32> = gpu.read(&out).unwrap();
    assert_eq!(got[0], 3.0);
    assert!(
        got[1].is_nan(),
        "x row 2 of 2 rows must give NaN, got {}",
        got[1]
    );
}
