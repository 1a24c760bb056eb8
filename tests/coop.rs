//! The encoder GEMM on the matrix units (cooperative matrices, f16 operands, f32 accumulation)
//! against the f64 reference, at shapes that are not multiples of any tile, with 8- and
//! 16-wide tiles, rows whose norms span 1e-3 … 1e5, and the packing's exact scaling and
//! overflow counts. Skipped on adapters without cooperative matrices, unless SAE_REQUIRE_COOP=1
//! (CI's cooperative-matrix lane), which turns the skip into a failure.

mod common;

use common::training::{run_options, tiny_config};
use common::{gpu, random_vec, rel_error, rng, POISON};
use sae_wgpu::choice::Choice;
use sae_wgpu::gpu::kernels::coop::{
    launch_encode_coop, launch_pack_rows, launch_pack_weights, CoopShape, PackedRows,
};
use sae_wgpu::gpu::{CoopTile, F16Overflow, Gpu, GpuBuffer, MatmulChoice, Recorder};
use sae_wgpu::run::train::train;

/// f16 operands: relative error of the products' sum, norm-wise.
const TOL: f64 = 2e-3;

fn coop_gpu() -> Option<&'static Gpu> {
    let gpu = gpu()?;
    if gpu.coop.is_none() {
        if std::env::var("SAE_REQUIRE_COOP").as_deref() == Ok("1") {
            panic!(
                "SAE_REQUIRE_COOP=1 but '{}' has no cooperative matrices for f16 → f32 (features {:?})",
                gpu.info.name, gpu.features
            );
        }
        eprintln!("SKIP: no cooperative matrices on {}", gpu.info.name);
        return None;
    }
    Some(gpu)
}

/// Both tile edges, laid out for this adapter's subgroups (16 runs on lavapipe, which reports
/// only 8: the test covers the shader's 16-wide form for GPUs that report it).
fn tiles(gpu: &Gpu) -> Vec<CoopTile> {
    [8, 16]
        .into_iter()
        .map(|edge| CoopTile::new(edge, gpu.info.subgroup_min_size, gpu.info.subgroup_max_size))
        .collect()
}

fn poisoned(gpu: &Gpu, label: &str, n: usize) -> GpuBuffer {
    gpu.upload(label, &vec![f32::from_bits(POISON); n]).unwrap()
}

/// h from the coop path: rows packed, weights packed, the GEMM; and the overflow counts.
fn coop_forward(
    gpu: &Gpu,
    tile: CoopTile,
    x: &[f32],
    b_dec: &[f32],
    w: &[f32],
    b_enc: &[f32],
    shape: CoopShape,
) -> (Vec<f32>, Vec<f32>, [u32; 2]) {
    let CoopShape { rows, k, n } = shape;
    let x_buf = gpu.upload("x", x).unwrap();
    let b_dec_buf = gpu.upload("b_dec", b_dec).unwrap();
    let w_buf = gpu.upload("w", w).unwrap();
    let b_enc_buf = gpu.upload("b_enc", b_enc).unwrap();
    let a = gpu.storage::<half::f16>("a", rows * k).unwrap();
    let row_scale = poisoned(gpu, "row_scale", rows);
    let w16 = gpu.storage::<half::f16>("w16", k * n).unwrap();
    let overflow = gpu.storage::<u32>("overflow", 2).unwrap();
    let h = poisoned(gpu, "h", rows * n);
    let packed = PackedRows {
        a: &a,
        row_scale: &row_scale,
        overflow: &overflow,
    };
    let mut rec = Recorder::new(gpu, "coop test");
    launch_pack_weights(&mut rec, &w_buf, &w16, &overflow, k, n, tile).unwrap();
    launch_pack_rows(&mut rec, &x_buf, &b_dec_buf, &packed, shape, tile).unwrap();
    launch_encode_coop(&mut rec, &packed, &w16, &b_enc_buf, &h, shape, tile).unwrap();
    rec.submit().unwrap();
    let counts: Vec<u32> = gpu.read(&overflow).unwrap();
    (
        gpu.read(&h).unwrap(),
        gpu.read(&row_scale).unwrap(),
        [counts[0], counts[1]],
    )
}

/// (x − b_dec)·w + b_enc in f64.
fn reference(x: &[f32], b_dec: &[f32], w: &[f32], b_enc: &[f32], shape: CoopShape) -> Vec<f64> {
    let CoopShape { rows, k, n } = shape;
    let mut out = vec![0.0f64; rows * n];
    for r in 0..rows {
        for c in 0..k {
            let v = f64::from(x[r * k + c]) - f64::from(b_dec[c]);
            for j in 0..n {
                out[r * n + j] += v * f64::from(w[c * n + j]);
            }
        }
        for j in 0..n {
            out[r * n + j] += f64::from(b_enc[j]);
        }
    }
    out
}

#[test]
fn coop_gemm_matches_reference_at_unaligned_shapes() {
    let Some(gpu) = coop_gpu() else { return };
    let shapes = [
        (1, 1, 1),
        (7, 33, 577),
        (33, 7, 1),
        (577, 33, 7),
        (33, 577, 33),
        (1, 577, 7),
        (7, 1, 33),
        (64, 64, 64),
    ];
    for tile in tiles(gpu) {
        for (i, &(rows, k, n)) in shapes.iter().enumerate() {
            let mut r = rng(100 + i as u64);
            let shape = CoopShape { rows, k, n };
            let x = random_vec(&mut r, rows * k, 2.0);
            let b_dec = random_vec(&mut r, k, 0.5);
            let w = random_vec(&mut r, k * n, 1.0 / (k as f32).sqrt());
            let b_enc = random_vec(&mut r, n, 0.1);
            let (h, _, overflow) = coop_forward(gpu, tile, &x, &b_dec, &w, &b_enc, shape);
            let want = reference(&x, &b_dec, &w, &b_enc, shape);
            let err = rel_error(&h, &want);
            assert!(
                err <= TOL,
                "tile {} rows {rows} k {k} n {n}: relative error {err:.2e} (tolerance {TOL:.0e})",
                tile.edge
            );
            assert_eq!(overflow, [0, 0], "tile {} {rows}×{k}×{n}", tile.edge);
        }
    }
}

#[test]
fn rows_of_every_norm_keep_f16_precision() {
    let Some(gpu) = coop_gpu() else { return };
    let (rows, k, n) = (33, 65, 47);
    let shape = CoopShape { rows, k, n };
    let mut r = rng(7);
    // Row i has norm about 10^(-3 + 8i/(rows − 1)): 1e-3 … 1e5.
    let mut x = random_vec(&mut r, rows * k, 1.0);
    for (i, row) in x.chunks_mut(k).enumerate() {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        let target = 10f32.powf(-3.0 + 8.0 * i as f32 / (rows - 1) as f32);
        row.iter_mut().for_each(|v| *v *= target / norm);
    }
    let b_dec = vec![0.0f32; k];
    let w = random_vec(&mut r, k * n, 1.0 / (k as f32).sqrt());
    let b_enc = vec![0.0f32; n];
    for tile in tiles(gpu) {
        let (h, scales, overflow) = coop_forward(gpu, tile, &x, &b_dec, &w, &b_enc, shape);
        let want = reference(&x, &b_dec, &w, &b_enc, shape);
        for row in 0..rows {
            let got = &h[row * n..(row + 1) * n];
            let err = rel_error(got, &want[row * n..(row + 1) * n]);
            assert!(
                err <= TOL,
                "tile {} row {row} (norm 1e{:.1}): relative error {err:.2e}",
                tile.edge,
                -3.0 + 8.0 * row as f64 / (rows - 1) as f64
            );
            let s = scales[row];
            assert!(
                s > 0.0 && s.log2().fract() == 0.0,
                "row {row}: scale {s} is not a power of two"
            );
        }
        assert_eq!(overflow, [0, 0]);
    }
}

#[test]
fn what_f16_cannot_hold_is_counted_never_silently_wrong() {
    let Some(gpu) = coop_gpu() else { return };
    let (rows, k, n) = (3, 5, 4);
    let shape = CoopShape { rows, k, n };
    let mut x = vec![1.0f32; rows * k];
    x[k + 2] = f32::INFINITY; // row 1 cannot be scaled
    let b_dec = vec![0.0f32; k];
    let mut w = vec![0.25f32; k * n];
    w[3] = 1.0e6; // beyond f16's range: clamped, counted
    let b_enc = vec![0.0f32; n];
    let tile = tiles(gpu)[0];
    let (h, _, overflow) = coop_forward(gpu, tile, &x, &b_dec, &w, &b_enc, shape);
    assert_eq!(overflow, [1, 1], "one row and one weight past f16's range");
    // Row 1 is not finite, as it would be in f32; the others are what f16 weights give.
    assert!(h[n..2 * n].iter().any(|v| !v.is_finite()));
    assert!(h[..n].iter().chain(&h[2 * n..]).all(|v| v.is_finite()));
}

/// A TopK run on the real shards with f16 operands reaches the held-out FVU of the same run in
/// f32 within 1%, and records what ran.
#[test]
fn f16_training_matches_f32_on_real_shards() {
    let Some(data) = common::shared_data() else {
        return;
    };
    let Some(gpu) = coop_gpu() else { return };
    let root = common::temp_dir("coop-train");
    let mut fvu = Vec::new();
    for matmul in [MatmulChoice::F16, MatmulChoice::F32] {
        let mut config = tiny_config(vec![data.join("train_0000.safetensors")], 1152, 32, 32);
        config.data.eval_inputs = vec![data.join("heldout.safetensors")];
        config.data.eval_fraction = 0.0;
        config.data.batch_size = 512;
        config.optim.lr = 2e-4 * (16384.0f64 / 1152.0).sqrt();
        config.compute.matmul = matmul;
        let dir = root.join(matmul.name());
        let report = train(gpu, Some(config), &run_options(&dir, false, None)).unwrap();
        assert_eq!(report.matmul, matmul.name());
        let recorded: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(recorded["matmul"], matmul.name());
        assert_eq!(
            recorded["matmul_tile"].is_null(),
            matmul == MatmulChoice::F32
        );
        if matmul == MatmulChoice::F16 {
            assert_eq!(report.f16_overflow, Some(F16Overflow::default()));
        }
        fvu.push(report.heldout.unwrap().fvu);
    }
    let relative = (fvu[0] - fvu[1]).abs() / fvu[1];
    assert!(
        relative <= 0.01,
        "held-out FVU f16 {} vs f32 {}: {relative:.2e} apart (at most 1%)",
        fvu[0],
        fvu[1]
    );
}

/// `sae eval --matmul f16` of sparsify's checkpoint on the real held-out shard gives the FVU of
/// `--matmul f32` within 1e-3 (relative).
#[test]
fn f16_eval_of_the_shared_checkpoint_matches_f32() {
    let Some(data) = common::shared_data() else {
        return;
    };
    if coop_gpu().is_none() {
        return;
    }
    let eval = |matmul: &str| -> serde_json::Value {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_sae"))
            .arg("eval")
            .arg(data.join("sparsify-topk-k32-x8"))
            .arg(data.join("heldout.safetensors"))
            .args(["--json", "--matmul", matmul])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let (f16, f32) = (eval("f16"), eval("f32"));
    assert_eq!(f16["matmul"], "f16");
    assert_eq!(f32["matmul"], "f32");
    assert_eq!(f16["f16_overflow"]["rows"], 0);
    for figure in ["fvu", "mse", "l0", "mean_cosine"] {
        let (a, b) = (f16[figure].as_f64().unwrap(), f32[figure].as_f64().unwrap());
        let relative = (a - b).abs() / b.abs().max(1e-12);
        assert!(
            relative <= 1e-3,
            "{figure}: f16 {a} vs f32 {b} ({relative:.2e} apart)"
        );
    }
}

/// Without cooperative matrices, `--matmul f16` is a one-line error naming what is missing,
/// and `auto` runs f32.
#[test]
fn without_matrix_units_f16_is_refused_and_auto_runs_f32() {
    let Some(gpu) = gpu() else { return };
    if gpu.coop.is_some() {
        return;
    }
    let root = common::temp_dir("coop-none");
    let data = root.join("acts.safetensors");
    let x = random_vec(&mut rng(3), 300 * 6, 1.0);
    sae_wgpu::io::write_safetensors(
        &data,
        &[sae_wgpu::io::TensorOut::f32("activations", &[300, 6], &x)],
        None,
    )
    .unwrap();
    let line = common::sae_fails(
        &[
            "train".as_ref(),
            data.as_os_str(),
            "--matmul".as_ref(),
            "f16".as_ref(),
            "--batch-size".as_ref(),
            "64".as_ref(),
            "--out".as_ref(),
            root.join("f16").as_os_str(),
            "--quiet".as_ref(),
        ],
        &[
            "--matmul f16",
            "cooperative matrices",
            "EXPERIMENTAL_COOPERATIVE_MATRIX",
        ],
    );
    assert!(!root.join("f16").join("config.json").exists(), "{line}");
    let mut config = tiny_config(vec![data], 12, 3, 4);
    config.data.batch_size = 64;
    config.compute.matmul = MatmulChoice::Auto;
    let report = train(
        gpu,
        Some(config),
        &run_options(&root.join("auto"), false, None),
    )
    .unwrap();
    assert_eq!(report.matmul, "f32");
}
