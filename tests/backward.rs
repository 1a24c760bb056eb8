//! Decoder forward, loss gradient and every backward kernel against the f64 reference; the
//! whole TopK loss gradient against finite differences on a tiny SAE.

mod common;

use common::reference::{centered_sq, decode, fvu_grads, fvu_loss_fixed_selection, topk, RefSae};
use common::{assert_close, gpu, random_vec, rng, to_f64, POISON};
use sae_wgpu::gpu::kernels::backward::{
    launch_aux_residual, launch_bias_dec_grad, launch_code_grad, launch_decoder_weight_grad,
    launch_encoder_weight_grad, launch_loss_grad, launch_reverse_index, BackwardShape, LossScale,
    ReverseIndex,
};
use sae_wgpu::gpu::kernels::decoder::launch_decode_sparse;
use sae_wgpu::gpu::kernels::encoder::{launch_encode_gemm, EncoderShape, GemmTiles};
use sae_wgpu::gpu::kernels::reduce::Reducer;
use sae_wgpu::gpu::kernels::topk::launch_topk;
use sae_wgpu::gpu::{Gpu, GpuBuffer, InputPrecision, Recorder};

struct Case {
    rows: usize,
    d_in: usize,
    d_sae: usize,
    k: usize,
    x: Vec<f32>,
    w_enc: Vec<f32>,
    b_enc: Vec<f32>,
    w_dec: Vec<f32>,
    b_dec: Vec<f32>,
}

impl Case {
    fn random(seed: u64, rows: usize, d_in: usize, d_sae: usize, k: usize) -> Case {
        let mut rng = rng(seed);
        // Positive encoder bias so most chosen latents fire (exercises the ReLU mask both ways).
        let b_enc = random_vec(&mut rng, d_sae, 0.3)
            .iter()
            .map(|v| v + 0.1)
            .collect();
        Case {
            rows,
            d_in,
            d_sae,
            k,
            x: random_vec(&mut rng, rows * d_in, 1.5),
            w_enc: random_vec(&mut rng, d_in * d_sae, 0.6),
            b_enc,
            w_dec: random_vec(&mut rng, d_sae * d_in, 0.6),
            b_dec: random_vec(&mut rng, d_in, 0.3),
        }
    }

    fn reference(&self) -> RefSae {
        RefSae {
            d_in: self.d_in,
            d_sae: self.d_sae,
            w_enc: to_f64(&self.w_enc),
            b_enc: to_f64(&self.b_enc),
            w_dec: to_f64(&self.w_dec),
            b_dec: to_f64(&self.b_dec),
        }
    }

    fn shape(&self) -> BackwardShape {
        BackwardShape {
            rows: self.rows,
            d_in: self.d_in,
            d_out: self.d_in,
            d_sae: self.d_sae,
            k: self.k,
        }
    }
}

/// Every buffer of a forward + backward pass, outputs poisoned.
struct Run {
    x: GpuBuffer,
    w_enc: GpuBuffer,
    b_enc: GpuBuffer,
    w_dec: GpuBuffer,
    b_dec: GpuBuffer,
    h: GpuBuffer,
    top_idx: GpuBuffer,
    top_val: GpuBuffer,
    x_hat: GpuBuffer,
    stats: GpuBuffer,
    col_mean: GpuBuffer,
    grad_out: GpuBuffer,
    code_grad: GpuBuffer,
    g_w_enc: GpuBuffer,
    g_b_enc: GpuBuffer,
    g_w_dec: GpuBuffer,
    g_b_dec: GpuBuffer,
    index: ReverseIndex,
}

fn run_case(gpu: &Gpu, case: &Case) -> Run {
    let s = case.shape();
    let poisoned = |label: &str, n: usize| {
        let b = gpu.storage::<f32>(label, n).unwrap();
        gpu.fill_u32(&b, POISON);
        b
    };
    let run = Run {
        x: gpu.upload("x", &case.x).unwrap(),
        w_enc: gpu.upload("w_enc", &case.w_enc).unwrap(),
        b_enc: gpu.upload("b_enc", &case.b_enc).unwrap(),
        w_dec: gpu.upload("w_dec", &case.w_dec).unwrap(),
        b_dec: gpu.upload("b_dec", &case.b_dec).unwrap(),
        h: poisoned("h", s.rows * s.d_sae),
        top_idx: poisoned("top_idx", s.entries()),
        top_val: poisoned("top_val", s.entries()),
        x_hat: poisoned("x_hat", s.rows * s.d_in),
        stats: poisoned("stats", 4),
        col_mean: poisoned("col_mean", s.d_in),
        grad_out: poisoned("grad_out", s.rows * s.d_in),
        code_grad: poisoned("code_grad", s.entries()),
        g_w_enc: poisoned("g_w_enc", s.d_in * s.d_sae),
        g_b_enc: poisoned("g_b_enc", s.d_sae),
        g_w_dec: poisoned("g_w_dec", s.d_sae * s.d_in),
        g_b_dec: poisoned("g_b_dec", s.d_in),
        index: ReverseIndex::new(gpu, s).unwrap(),
    };
    gpu.fill_u32(&run.index.offsets, POISON);
    gpu.fill_u32(&run.index.entries, POISON);
    let reducer = Reducer::new(gpu).unwrap();
    let mut rec = Recorder::new(gpu, "forward-backward");
    let enc_shape = EncoderShape {
        rows: s.rows,
        d_in: s.d_in,
        d_sae: s.d_sae,
    };
    launch_encode_gemm(
        &mut rec,
        &run.x,
        InputPrecision::F32,
        &run.w_enc,
        &run.b_dec,
        &run.b_enc,
        &run.h,
        enc_shape,
        GemmTiles::default(),
    )
    .unwrap();
    launch_topk(
        &mut rec,
        &run.h,
        s.rows,
        s.d_sae,
        s.k,
        &run.top_idx,
        &run.top_val,
        None,
    )
    .unwrap();
    launch_decode_sparse(
        &mut rec,
        &run.top_idx,
        &run.top_val,
        &run.w_dec,
        &run.b_dec,
        &run.x_hat,
        s.rows,
        s.d_in,
        s.d_sae,
        s.k,
    )
    .unwrap();
    reducer
        .launch_centered_sq(
            &mut rec,
            &run.x,
            s.rows,
            s.d_in,
            &run.col_mean,
            &run.stats,
            0,
        )
        .unwrap();
    launch_loss_grad(
        &mut rec,
        &run.x_hat,
        &run.x,
        &run.stats,
        LossScale::fvu(0),
        &run.grad_out,
        s,
    )
    .unwrap();
    launch_code_grad(
        &mut rec,
        &run.grad_out,
        &run.top_idx,
        &run.top_val,
        &run.w_dec,
        &run.code_grad,
        s,
    )
    .unwrap();
    launch_reverse_index(&mut rec, &run.top_idx, &run.index).unwrap();
    launch_decoder_weight_grad(
        &mut rec,
        &run.index,
        &run.top_val,
        &run.grad_out,
        &run.g_w_dec,
        false,
    )
    .unwrap();
    launch_encoder_weight_grad(
        &mut rec,
        &run.index,
        &run.code_grad,
        &run.x,
        &run.b_dec,
        &run.g_w_enc,
        &run.g_b_enc,
        false,
    )
    .unwrap();
    launch_bias_dec_grad(
        &mut rec,
        &run.grad_out,
        &run.w_enc,
        &run.g_b_enc,
        &run.g_b_dec,
        s,
    )
    .unwrap();
    rec.submit().unwrap();
    run
}

fn read(gpu: &Gpu, b: &GpuBuffer) -> Vec<f32> {
    gpu.read(b).unwrap()
}

// One row has zero centred variance (FVU undefined), so the smallest batch is two rows.
// d_in ≤ 256 takes the one-invocation-per-entry code gradient, the last case the workgroup one.
const CASES: [(usize, usize, usize, usize); 7] = [
    (2, 1, 1, 1),
    (7, 5, 9, 9),
    (33, 7, 65, 4),
    (37, 33, 129, 7),
    (65, 17, 577, 32),
    (3, 20, 40, 1),
    (5, 301, 41, 3),
];

#[test]
fn forward_and_backward_match_reference() {
    let Some(gpu) = gpu() else { return };
    for (n, &(rows, d_in, d_sae, k)) in CASES.iter().enumerate() {
        let case = Case::random(100 + n as u64, rows, d_in, d_sae, k);
        let what = |name: &str| format!("{name} (rows {rows}, d_in {d_in}, d_sae {d_sae}, k {k})");
        let run = run_case(gpu, &case);
        let sae = case.reference();
        let x = to_f64(&case.x);

        // The selection is checked exactly against TopK of the GPU's own h (the GEMM is
        // checked separately), then everything downstream against f64 on that selection.
        let h = read(gpu, &run.h);
        let (want_idx, _) = topk(&h, rows, d_sae, k, None);
        let idx: Vec<u32> = gpu.read(&run.top_idx).unwrap();
        assert_eq!(idx, want_idx, "{}", what("top_idx"));
        let h_ref = common::reference::encode(&x, rows, &sae);
        let val: Vec<f64> = idx
            .iter()
            .enumerate()
            .map(|(e, &i)| h_ref[(e / k) * d_sae + i as usize].max(0.0))
            .collect();
        assert_close(&what("top_val"), &read(gpu, &run.top_val), &val, 1e-5);

        let x_hat = decode(&idx, &val, rows, k, &sae);
        assert_close(&what("x_hat"), &read(gpu, &run.x_hat), &x_hat, 1e-5);
        let variance = centered_sq(&x, rows, d_in);
        let stats = read(gpu, &run.stats);
        assert_close(&what("centred variance"), &stats[..1], &[variance], 1e-5);

        let grads = fvu_grads(&x, rows, &idx, &val, k, &sae);
        assert_close(
            &what("grad_out"),
            &read(gpu, &run.grad_out),
            &grads.grad_out,
            1e-5,
        );
        assert_close(
            &what("code_grad"),
            &read(gpu, &run.code_grad),
            &grads.code_grad,
            1e-5,
        );
        assert_close(
            &what("grad W_dec"),
            &read(gpu, &run.g_w_dec),
            &grads.w_dec,
            1e-5,
        );
        assert_close(
            &what("grad W_enc"),
            &read(gpu, &run.g_w_enc),
            &grads.w_enc,
            1e-5,
        );
        assert_close(
            &what("grad b_enc"),
            &read(gpu, &run.g_b_enc),
            &grads.b_enc,
            1e-5,
        );
        assert_close(
            &what("grad b_dec"),
            &read(gpu, &run.g_b_dec),
            &grads.b_dec,
            1e-5,
        );
    }
}

#[test]
fn reverse_index_is_stable_and_complete() {
    let Some(gpu) = gpu() else { return };
    let case = Case::random(7, 70, 6, 50, 5);
    let run = run_case(gpu, &case);
    let idx: Vec<u32> = gpu.read(&run.top_idx).unwrap();
    let counts: Vec<u32> = gpu.read(&run.index.counts).unwrap();
    let offsets: Vec<u32> = gpu.read(&run.index.offsets).unwrap();
    let entries: Vec<u32> = gpu.read(&run.index.entries).unwrap();
    let mut expected = Vec::new();
    let mut expected_offsets = vec![0u32];
    for latent in 0..case.d_sae as u32 {
        let mine: Vec<u32> = (0..idx.len() as u32)
            .filter(|&e| idx[e as usize] == latent)
            .collect();
        assert_eq!(
            counts[latent as usize] as usize,
            mine.len(),
            "count of latent {latent}"
        );
        expected.extend(mine);
        expected_offsets.push(expected.len() as u32);
    }
    assert_eq!(offsets, expected_offsets);
    assert_eq!(
        entries, expected,
        "entries must be grouped by latent, in row order"
    );
}

/// Central differences of the f64 loss (selection held fixed) against the GPU gradients.
#[test]
fn loss_gradient_matches_finite_differences() {
    let Some(gpu) = gpu() else { return };
    let (rows, d_in, d_sae, k) = (5, 4, 6, 2);
    let case = Case::random(42, rows, d_in, d_sae, k);
    let run = run_case(gpu, &case);
    let idx: Vec<u32> = gpu.read(&run.top_idx).unwrap();
    let x = to_f64(&case.x);
    let base = case.reference();
    let step = 1e-6;
    let loss = |sae: &RefSae| fvu_loss_fixed_selection(&x, rows, &idx, k, sae);

    type Field = fn(&mut RefSae) -> &mut Vec<f64>;
    let fields: [(&str, Field, &GpuBuffer); 4] = [
        ("W_enc", |s| &mut s.w_enc, &run.g_w_enc),
        ("b_enc", |s| &mut s.b_enc, &run.g_b_enc),
        ("W_dec", |s| &mut s.w_dec, &run.g_w_dec),
        ("b_dec", |s| &mut s.b_dec, &run.g_b_dec),
    ];
    for (name, field, gpu_grad) in fields {
        let n = field(&mut base.clone()).len();
        let numeric: Vec<f64> = (0..n)
            .map(|i| {
                let mut plus = base.clone();
                field(&mut plus)[i] += step;
                let mut minus = base.clone();
                field(&mut minus)[i] -= step;
                (loss(&plus) - loss(&minus)) / (2.0 * step)
            })
            .collect();
        assert_close(
            &format!("finite-difference grad {name}"),
            &read(gpu, gpu_grad),
            &numeric,
            1e-4,
        );
    }
}

/// AuxK pieces: the residual error, the loss gradient with a GPU-computed factor, and the
/// weight-gradient kernels adding onto existing gradients.
#[test]
fn aux_residual_scaled_loss_grad_and_accumulation_match_reference() {
    let Some(gpu) = gpu() else { return };
    let case = Case::random(21, 9, 7, 30, 3);
    let s = case.shape();
    let run = run_case(gpu, &case);
    let n = s.rows * s.d_in;
    let mut rng = rng(22);
    let e_hat = random_vec(&mut rng, n, 1.0);
    let e_hat_buf = gpu.upload("e_hat", &e_hat).unwrap();
    let diff = gpu.storage::<f32>("aux_diff", n).unwrap();
    let zeros = gpu.storage::<f32>("zeros", n).unwrap();
    let grad_aux = gpu.storage::<f32>("grad_aux", n).unwrap();
    gpu.fill_u32(&diff, POISON);
    gpu.fill_u32(&grad_aux, POISON);
    // stats[0] = variance from run_case; put a factor in stats[2].
    let mut stats_host: Vec<f32> = gpu.read(&run.stats).unwrap();
    stats_host[2] = 0.375;
    gpu.write(&run.stats, &stats_host).unwrap();
    let before_w_dec: Vec<f32> = gpu.read(&run.g_w_dec).unwrap();
    let before_w_enc: Vec<f32> = gpu.read(&run.g_w_enc).unwrap();
    let before_b_enc: Vec<f32> = gpu.read(&run.g_b_enc).unwrap();

    let mut rec = Recorder::new(gpu, "aux");
    launch_aux_residual(&mut rec, &e_hat_buf, &run.x, &run.x_hat, &diff, s).unwrap();
    let scale = LossScale {
        constant: 2.0,
        variance_slot: 0,
        factor_slot: Some(2),
    };
    launch_loss_grad(&mut rec, &diff, &zeros, &run.stats, scale, &grad_aux, s).unwrap();
    // Accumulate the main entries' gradients a second time: the result must double.
    launch_decoder_weight_grad(
        &mut rec,
        &run.index,
        &run.top_val,
        &run.grad_out,
        &run.g_w_dec,
        true,
    )
    .unwrap();
    launch_encoder_weight_grad(
        &mut rec,
        &run.index,
        &run.code_grad,
        &run.x,
        &run.b_dec,
        &run.g_w_enc,
        &run.g_b_enc,
        true,
    )
    .unwrap();
    rec.submit().unwrap();

    let x: Vec<f32> = case.x.clone();
    let x_hat: Vec<f32> = gpu.read(&run.x_hat).unwrap();
    let want_diff: Vec<f64> = (0..n)
        .map(|i| f64::from(e_hat[i]) - (f64::from(x[i]) - f64::from(x_hat[i])))
        .collect();
    assert_close("aux residual", &read(gpu, &diff), &want_diff, 1e-5);
    let variance = f64::from(stats_host[0]);
    let want_grad: Vec<f64> = want_diff
        .iter()
        .map(|d| 2.0 * 0.375 * d / variance)
        .collect();
    assert_close("scaled loss grad", &read(gpu, &grad_aux), &want_grad, 1e-5);
    let doubled = |v: &[f32]| v.iter().map(|x| 2.0 * f64::from(*x)).collect::<Vec<_>>();
    assert_close(
        "accumulated grad W_dec",
        &read(gpu, &run.g_w_dec),
        &doubled(&before_w_dec),
        1e-6,
    );
    assert_close(
        "accumulated grad W_enc",
        &read(gpu, &run.g_w_enc),
        &doubled(&before_w_enc),
        1e-6,
    );
    assert_close(
        "accumulated grad b_enc",
        &read(gpu, &run.g_b_enc),
        &doubled(&before_b_enc),
        1e-6,
    );
}
