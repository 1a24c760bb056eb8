//! JumpReLU's own kernels against f64 references at unaligned shapes, outputs NaN-poisoned: the
//! straight-through estimator's threshold gradient (step and tanh penalties, θ and log θ, a
//! block of a split dictionary, more rows than a workgroup has lanes) and θ from the trained
//! parameter. The whole step's pseudo-gradient is checked in tests/architecture_gradients.rs.

mod common;

use common::{assert_close, gpu, random_vec, rng, POISON};
use sae_wgpu::gpu::kernels::jumprelu::{
    launch_threshold_from_param, launch_threshold_grad, ThresholdGrad, ThresholdGradBuffers,
};
use sae_wgpu::gpu::kernels::LatentRange;
use sae_wgpu::gpu::Recorder;

/// The estimator's gradient on each latent's threshold parameter, in f64.
fn threshold_grad_reference(
    pre: &[f32],
    grad_out: &[f32],
    w_dec: &[f32],
    norms: &[f32],
    thresholds: &[f32],
    block: LatentRange,
    args: ThresholdGrad,
) -> Vec<f64> {
    let (rows, d_in) = (args.rows, args.d_out);
    let eps = f64::from(args.bandwidth);
    let coeff = f64::from(args.coeff);
    (0..block.len)
        .map(|i| {
            let latent = block.start + i;
            let theta = f64::from(thresholds[latent]);
            let norm = f64::from(norms[latent]);
            let mut grad = 0.0;
            for r in 0..rows {
                let h = f64::from(pre[r * block.len + i]);
                let u = (h - theta) / eps;
                if !(u > -0.5 && u < 0.5) {
                    continue;
                }
                let mut upstream: f64 = (0..d_in)
                    .map(|c| f64::from(grad_out[r * d_in + c]) * f64::from(w_dec[i * d_in + c]))
                    .sum();
                match args.tanh_scale {
                    Some(s) => {
                        let s = f64::from(s);
                        let f = if h > theta { h } else { 0.0 };
                        let t = (s * f * norm).tanh();
                        upstream += coeff * s * norm * (1.0 - t * t);
                        grad -= theta / eps * upstream;
                    }
                    None => grad -= theta / eps * upstream + coeff / eps,
                }
            }
            if args.log_param {
                grad * theta
            } else {
                grad
            }
        })
        .collect()
}

#[test]
fn threshold_grad_matches_reference() {
    let Some(gpu) = gpu() else { return };
    // (rows, d_in, latents before the block, block latents)
    let shapes = [
        (1, 1, 0, 1),
        (7, 33, 0, 7),
        (300, 7, 5, 33),
        (33, 577, 2, 3),
    ];
    let penalties = [(None, false), (Some(4.0f32), true), (Some(4.0), false)];
    for (n, &(rows, d_in, start, len)) in shapes.iter().enumerate() {
        for &(tanh_scale, log_param) in &penalties {
            let name =
                format!("{rows}x{d_in} block {start}+{len} tanh {tanh_scale:?} log {log_param}");
            let mut r = rng(n as u64 + 40);
            let d_sae = start + len + 2;
            let block = LatentRange { start, len };
            let thresholds: Vec<f32> = random_vec(&mut r, d_sae, 0.05)
                .iter()
                .map(|v| 0.1 + v)
                .collect();
            // Pre-activations around the thresholds, so the window catches some.
            let pre: Vec<f32> = random_vec(&mut r, rows * len, 0.15)
                .iter()
                .map(|v| 0.1 + v)
                .collect();
            let grad_out = random_vec(&mut r, rows * d_in, 1.0);
            let w_dec = random_vec(&mut r, len * d_in, 0.3);
            let norms: Vec<f32> = random_vec(&mut r, d_sae, 0.5)
                .iter()
                .map(|v| 1.0 + v)
                .collect();
            let args = ThresholdGrad {
                rows,
                d_out: d_in,
                bandwidth: 0.1,
                tanh_scale,
                coeff: 0.3 / rows as f32,
                log_param,
            };
            let upload = |label: &str, data: &[f32]| gpu.upload(label, data).unwrap();
            let grad = gpu.storage::<f32>("grad_param", d_sae).unwrap();
            gpu.fill_u32(&grad, POISON);
            let (pre_b, out_b, w_b) = (
                upload("pre", &pre),
                upload("grad_out", &grad_out),
                upload("w_dec", &w_dec),
            );
            let (norms_b, theta_b) = (upload("norms", &norms), upload("thresholds", &thresholds));
            let mut rec = Recorder::new(gpu, "threshold grad");
            let buffers = ThresholdGradBuffers {
                pre: &pre_b,
                grad_out: &out_b,
                w_dec: &w_b,
                norms: &norms_b,
                thresholds: &theta_b,
                grad_param: &grad,
            };
            launch_threshold_grad(&mut rec, buffers, block, args).unwrap();
            rec.submit().unwrap();
            let got: Vec<f32> = gpu.read(&grad).unwrap();
            let want =
                threshold_grad_reference(&pre, &grad_out, &w_dec, &norms, &thresholds, block, args);
            let outside = got[..start].iter().chain(&got[start + len..]);
            assert!(
                outside.map(|v| v.to_bits()).all(|b| b == POISON),
                "{name}: wrote outside its block"
            );
            if want.iter().all(|&g| g == 0.0) {
                // Nothing in the window (one row): the kernel must still write its zeros.
                assert!(got[start..start + len].iter().all(|&g| g == 0.0), "{name}");
                continue;
            }
            assert_close(&name, &got[start..start + len], &want, 1e-5);
        }
    }
}

#[test]
fn thresholds_follow_the_trained_parameter() {
    let Some(gpu) = gpu() else { return };
    for n in [1usize, 7, 577] {
        let param = random_vec(&mut rng(n as u64), n, 2.0);
        for log in [false, true] {
            let param_b = gpu.upload("param", &param).unwrap();
            let thresholds = gpu.storage::<f32>("thresholds", n).unwrap();
            gpu.fill_u32(&thresholds, POISON);
            let mut rec = Recorder::new(gpu, "thresholds");
            launch_threshold_from_param(&mut rec, &param_b, &thresholds, log).unwrap();
            rec.submit().unwrap();
            let got: Vec<f32> = gpu.read(&thresholds).unwrap();
            let want: Vec<f64> = param
                .iter()
                .map(|&p| {
                    let p = f64::from(p);
                    if log {
                        p.exp()
                    } else {
                        p.max(0.0)
                    }
                })
                .collect();
            assert_close(&format!("θ of {n} (log {log})"), &got, &want, 1e-6);
            // θ itself is projected onto θ ≥ 0 in place, as SAELens does.
            let after: Vec<f32> = gpu.read(&param_b).unwrap();
            let want_param: Vec<f64> = if log {
                param.iter().map(|&p| f64::from(p)).collect()
            } else {
                want.clone()
            };
            assert_close(
                &format!("parameter of {n} (log {log})"),
                &after,
                &want_param,
                0.0,
            );
        }
    }
}
