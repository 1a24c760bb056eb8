//! The kernels a transcoder adds, against f64 references at shapes that are not multiples of
//! any tile, outputs NaN-poisoned first: the skip path's weight gradient xᵀ·g (written and
//! accumulated), and the sparse decode onto a row per output row (x·W_skipᵀ + b_dec) with
//! d_out ≠ d_in; and the whole forward pass of a skip-transcoder against the CPU.

mod common;

use common::{assert_close, gpu, random_vec, rng, POISON};
use sae_wgpu::gpu::kernels::decoder::{launch_decode_sparse_block, DecodeBase};
use sae_wgpu::gpu::kernels::skip::launch_skip_weight_grad;
use sae_wgpu::gpu::kernels::LatentRange;
use sae_wgpu::gpu::{Gpu, GpuBuffer, Recorder};
use sae_wgpu::sae::params::{Activation, SaeParams, Transcoding};
use sae_wgpu::sae::pass::{ForwardPass, PassDepth};
use sae_wgpu::sae::GpuSae;

const SHAPES: [(usize, usize, usize); 5] = [
    (1, 1, 1),
    (7, 33, 577),
    (577, 7, 33),
    (33, 577, 7),
    (64, 16, 48),
];

fn poisoned(gpu: &Gpu, label: &str, n: usize) -> GpuBuffer {
    gpu.upload(label, &vec![f32::from_bits(POISON); n]).unwrap()
}

#[test]
fn skip_weight_grad_matches_reference() {
    let Some(gpu) = gpu() else { return };
    for (i, &(rows, d_in, d_out)) in SHAPES.iter().enumerate() {
        let mut r = rng(70 + i as u64);
        let x = random_vec(&mut r, rows * d_in, 1.0);
        let g = random_vec(&mut r, rows * d_out, 1.0);
        let before = random_vec(&mut r, d_in * d_out, 0.5);
        let mut want = vec![0.0f64; d_in * d_out];
        for row in 0..rows {
            for a in 0..d_in {
                for b in 0..d_out {
                    want[a * d_out + b] +=
                        f64::from(x[row * d_in + a]) * f64::from(g[row * d_out + b]);
                }
            }
        }
        let x_buf = gpu.upload("x", &x).unwrap();
        let g_buf = gpu.upload("g", &g).unwrap();
        let out = poisoned(gpu, "grad", d_in * d_out);
        let mut rec = Recorder::new(gpu, "skip grad");
        launch_skip_weight_grad(&mut rec, &x_buf, &g_buf, &out, rows, d_in, d_out, false).unwrap();
        rec.submit().unwrap();
        let name = format!("skip_weight_grad {rows}×{d_in}×{d_out}");
        assert_close(&name, &gpu.read::<f32>(&out).unwrap(), &want, 1e-5);
        // Accumulating onto what the buffer holds.
        let acc = gpu.upload("grad acc", &before).unwrap();
        let mut rec = Recorder::new(gpu, "skip grad acc");
        launch_skip_weight_grad(&mut rec, &x_buf, &g_buf, &acc, rows, d_in, d_out, true).unwrap();
        rec.submit().unwrap();
        let summed: Vec<f64> = want
            .iter()
            .zip(&before)
            .map(|(w, b)| w + f64::from(*b))
            .collect();
        assert_close(
            &format!("{name} accumulated"),
            &gpu.read::<f32>(&acc).unwrap(),
            &summed,
            1e-5,
        );
    }
}

#[test]
fn decode_onto_a_row_base_matches_reference() {
    let Some(gpu) = gpu() else { return };
    for (i, &(rows, d_sae, d_out)) in SHAPES.iter().enumerate() {
        let k = d_sae.min(5);
        let mut r = rng(90 + i as u64);
        let idx: Vec<u32> = (0..rows * k)
            .map(|e| ((e * 7 + e / k) % d_sae) as u32)
            .collect();
        let val = random_vec(&mut r, rows * k, 1.0);
        let w_dec = random_vec(&mut r, d_sae * d_out, 1.0);
        let base = random_vec(&mut r, rows * d_out, 1.0);
        let mut want: Vec<f64> = base.iter().map(|&v| f64::from(v)).collect();
        for row in 0..rows {
            for j in 0..k {
                let (latent, f) = (idx[row * k + j] as usize, f64::from(val[row * k + j]));
                for c in 0..d_out {
                    want[row * d_out + c] += f * f64::from(w_dec[latent * d_out + c]);
                }
            }
        }
        let out = poisoned(gpu, "x_hat", rows * d_out);
        let bufs = [
            gpu.upload("idx", &idx).unwrap(),
            gpu.upload("val", &val).unwrap(),
            gpu.upload("w_dec", &w_dec).unwrap(),
            gpu.upload("base", &base).unwrap(),
        ];
        let mut rec = Recorder::new(gpu, "decode");
        let whole = LatentRange::whole(d_sae);
        let onto = DecodeBase::Rows(&bufs[3]);
        launch_decode_sparse_block(
            &mut rec, &bufs[0], &bufs[1], &bufs[2], whole, onto, &out, rows, d_out, k,
        )
        .unwrap();
        rec.submit().unwrap();
        let name = format!("decode onto rows {rows}×{d_sae}→{d_out}");
        assert_close(&name, &gpu.read::<f32>(&out).unwrap(), &want, 1e-5);
    }
}

/// ŷ of a skip-transcoder on the CPU: TopK of x·W_enc + b_enc, then
/// b_dec + f·W_dec + x·W_skipᵀ.
fn forward_reference(p: &SaeParams, x: &[f32], rows: usize, k: usize) -> Vec<f64> {
    let (d_in, d_out, n) = (p.d_in, p.d_out(), p.d_sae);
    let w_skip = p.w_skip().unwrap();
    let mut out = vec![0.0f64; rows * d_out];
    for r in 0..rows {
        let xr = &x[r * d_in..(r + 1) * d_in];
        let mut h: Vec<(f64, usize)> = (0..n)
            .map(|i| {
                let v = f64::from(p.b_enc[i])
                    + (0..d_in)
                        .map(|c| f64::from(xr[c]) * f64::from(p.w_enc[c * n + i]))
                        .sum::<f64>();
                (v.max(0.0), i)
            })
            .collect();
        h.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for c in 0..d_out {
            let mut y = f64::from(p.b_dec[c]);
            for &(f, i) in h.iter().take(k) {
                y += f * f64::from(p.w_dec[i * d_out + c]);
            }
            for (j, &xv) in xr.iter().enumerate() {
                y += f64::from(xv) * f64::from(w_skip[c * d_in + j]);
            }
            out[r * d_out + c] = y;
        }
    }
    out
}

#[test]
fn skip_transcoder_forward_matches_reference() {
    let Some(gpu) = gpu() else { return };
    for (i, &(rows, d_in, d_out)) in [(7, 33, 17), (33, 7, 57), (1, 5, 3)].iter().enumerate() {
        let (d_sae, k) = (41, 4);
        let mut r = rng(120 + i as u64);
        let params = SaeParams {
            input_norm: Default::default(),
            d_in,
            d_sae,
            activation: Activation::TopK { k },
            w_enc: random_vec(&mut r, d_in * d_sae, 0.5),
            b_enc: random_vec(&mut r, d_sae, 0.2),
            w_dec: random_vec(&mut r, d_sae * d_out, 0.5),
            b_dec: random_vec(&mut r, d_out, 0.5),
            transcoder: Some(Transcoding {
                d_out,
                w_skip: Some(random_vec(&mut r, d_out * d_in, 0.3)),
            }),
        };
        let x = random_vec(&mut r, rows * d_in, 1.0);
        let sae = GpuSae::upload(gpu, &params, rows).unwrap();
        let pass = ForwardPass::new(gpu, &sae, rows, PassDepth::Reconstruct).unwrap();
        pass.run(&x, rows, |_, _| Ok(())).unwrap();
        let got = pass.reconstructions(rows).unwrap();
        let want = forward_reference(&params, &x, rows, k);
        let name = format!("skip-transcoder forward {rows}×{d_in}→{d_out}");
        assert_close(&name, &got, &want, 1e-5);
        // Downloaded as uploaded (W_skip is held transposed on the GPU).
        let back = sae.download(gpu).unwrap();
        assert_eq!(
            back.transcoder, params.transcoder,
            "{name}: W_skip round trip"
        );
        assert_eq!(back.w_dec, params.w_dec, "{name}: W_dec round trip");
    }
}
