//! Encoder GEMM against the f64 reference, at shapes that are not multiples of the tiles.

mod common;

use common::reference::{encode, RefSae};
use common::{assert_close, gpu, random_vec, rng, to_f64, POISON};
use half::f16;
use sae_wgpu::gpu::kernels::encoder::{launch_encode_gemm, EncoderShape, GemmTiles};
use sae_wgpu::gpu::{InputPrecision, Recorder};

// Unaligned shapes take the element-wise load path; the last three (K and N multiples of 4,
// not of the tiles) the vec4 path.
const SHAPES: [(usize, usize, usize); 7] = [
    (1, 1, 1),
    (7, 33, 577),
    (33, 7, 65),
    (70, 19, 130),
    (129, 64, 64),
    (33, 20, 132),
    (5, 4, 4),
];

fn check(
    rows: usize,
    d_in: usize,
    d_sae: usize,
    precision: InputPrecision,
    tiles: GemmTiles,
    tol: f64,
) {
    let Some(gpu) = gpu() else { return };
    let mut rng = rng((rows * 1000 + d_in * 10 + d_sae) as u64);
    let x = random_vec(&mut rng, rows * d_in, 2.0);
    let w_enc = random_vec(&mut rng, d_in * d_sae, 0.5);
    let b_enc = random_vec(&mut rng, d_sae, 0.5);
    let b_dec = random_vec(&mut rng, d_in, 0.5);
    // The reference sees exactly the inputs the GPU sees (x rounded to f16 for the f16 path).
    let (x_buf, x_ref) = match precision {
        InputPrecision::F32 => (gpu.upload("x", &x).unwrap(), to_f64(&x)),
        InputPrecision::F16 => {
            let half: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
            let back: Vec<f64> = half.iter().map(|v| f64::from(v.to_f32())).collect();
            (gpu.upload("x", &half).unwrap(), back)
        }
    };
    let sae = RefSae {
        d_in,
        d_sae,
        w_enc: to_f64(&w_enc),
        b_enc: to_f64(&b_enc),
        w_dec: vec![],
        b_dec: to_f64(&b_dec),
    };
    let expected = encode(&x_ref, rows, &sae);
    let w_buf = gpu.upload("w_enc", &w_enc).unwrap();
    let be_buf = gpu.upload("b_enc", &b_enc).unwrap();
    let bd_buf = gpu.upload("b_dec", &b_dec).unwrap();
    let h = gpu.storage::<f32>("h", rows * d_sae).unwrap();
    gpu.fill_u32(&h, POISON);
    let mut rec = Recorder::new(gpu, "test");
    let shape = EncoderShape { rows, d_in, d_sae };
    launch_encode_gemm(
        &mut rec, &x_buf, precision, &w_buf, &bd_buf, &be_buf, &h, shape, tiles,
    )
    .unwrap();
    rec.submit().unwrap();
    let out: Vec<f32> = gpu.read(&h).unwrap();
    assert_close(
        &format!("encode {rows}x{d_in}x{d_sae} {precision:?} {tiles:?}"),
        &out,
        &expected,
        tol,
    );
}

#[test]
fn encoder_gemm_f32_matches_reference() {
    for (rows, d_in, d_sae) in SHAPES {
        check(
            rows,
            d_in,
            d_sae,
            InputPrecision::F32,
            GemmTiles::default(),
            1e-5,
        );
    }
}

/// Every tile shape `sae bench tune` may choose, at every shape, and bitwise equal to the
/// default tiles (the k order of each sum is the same, so tuning never changes a result).
#[test]
fn every_tile_candidate_matches_reference_and_the_default_bitwise() {
    let Some(gpu) = gpu() else { return };
    for tiles in GemmTiles::CANDIDATES.iter().filter(|t| t.fits(&gpu.limits)) {
        for (rows, d_in, d_sae) in SHAPES {
            check(rows, d_in, d_sae, InputPrecision::F32, *tiles, 1e-5);
        }
    }
    let (rows, d_in, d_sae) = (70, 19, 130);
    let mut r = rng(7);
    let x = gpu
        .upload("x", &random_vec(&mut r, rows * d_in, 2.0))
        .unwrap();
    let w = gpu
        .upload("w", &random_vec(&mut r, d_in * d_sae, 0.5))
        .unwrap();
    let b = gpu
        .upload("b", &random_vec(&mut r, d_sae.max(d_in), 0.5))
        .unwrap();
    let run = |tiles: GemmTiles| -> Vec<f32> {
        let h = gpu.storage::<f32>("h", rows * d_sae).unwrap();
        let mut rec = Recorder::new(gpu, "test");
        let shape = EncoderShape { rows, d_in, d_sae };
        launch_encode_gemm(
            &mut rec,
            &x,
            InputPrecision::F32,
            &w,
            &b,
            &b,
            &h,
            shape,
            tiles,
        )
        .unwrap();
        rec.submit().unwrap();
        gpu.read(&h).unwrap()
    };
    let reference: Vec<u32> = run(GemmTiles::default())
        .iter()
        .map(|v| v.to_bits())
        .collect();
    for tiles in GemmTiles::CANDIDATES.iter().filter(|t| t.fits(&gpu.limits)) {
        let bits: Vec<u32> = run(*tiles).iter().map(|v| v.to_bits()).collect();
        assert!(
            bits == reference,
            "tiles {} differ from the default",
            tiles.label()
        );
    }
}

#[test]
fn encoder_gemm_f16_inputs_match_reference() {
    let Some(gpu) = gpu() else { return };
    if !gpu.has_f16() {
        eprintln!("SKIP: adapter lacks SHADER_F16");
        return;
    }
    for (rows, d_in, d_sae) in SHAPES {
        check(
            rows,
            d_in,
            d_sae,
            InputPrecision::F16,
            GemmTiles::default(),
            1e-5,
        );
    }
}

#[test]
fn encoder_gemm_rejects_short_buffers() {
    let Some(gpu) = gpu() else { return };
    let x = gpu.storage::<f32>("x", 3).unwrap();
    let w = gpu.storage::<f32>("w", 4).unwrap();
    let mut rec = Recorder::new(gpu, "test");
    let shape = EncoderShape {
        rows: 2,
        d_in: 2,
        d_sae: 2,
    };
    let err = launch_encode_gemm(
        &mut rec,
        &x,
        InputPrecision::F32,
        &w,
        &w,
        &w,
        &w,
        shape,
        GemmTiles::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("'x' holds 3 elements, needs 4"),
        "{err}"
    );
}
