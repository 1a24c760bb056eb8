//! A steady-state training step, and a steady-state batch of the analysis commands' forward
//! pass, create no GPU buffer and no bind group: everything they launch was built by the
//! first ones. (One test function: the counters are per device, and tests in one binary run
//! at the same time.)

mod common;

use common::{gpu, random_sae, random_vec, rng};
use sae_wgpu::data::{ActDtype, Batch};
use sae_wgpu::gpu::kernels::optim::AdamConfig;
use sae_wgpu::gpu::AllocationCounts;
use sae_wgpu::sae::forward::GpuSae;
use sae_wgpu::sae::params::{Activation, SaeParams};
use sae_wgpu::sae::pass::{ForwardPass, PassDepth};
use sae_wgpu::sae::trainer::{AuxKConfig, Trainer};
use sae_wgpu::sae::trainer::{Feed, MemberStep};

fn f32_batch(x: Vec<f32>, rows: usize) -> Batch {
    Batch {
        x,
        rows,
        ..Batch::default()
    }
}

fn f16_batch(x: &[f32], rows: usize) -> Batch {
    Batch {
        half: x
            .iter()
            .map(|&v| half::f16::from_f32(v).to_bits())
            .collect(),
        half_dtype: Some(ActDtype::F16),
        rows,
        ..Batch::default()
    }
}

#[track_caller]
fn assert_nothing_created(what: &str, before: AllocationCounts, after: AllocationCounts) {
    assert_eq!(
        (after.buffers, after.bind_groups),
        (before.buffers, before.bind_groups),
        "{what}: {} buffers and {} bind groups created in steady state",
        after.buffers - before.buffers,
        after.bind_groups - before.bind_groups
    );
}

#[test]
fn steady_state_steps_and_batches_allocate_nothing() {
    let Some(gpu) = gpu() else { return };
    let (rows, d_in, d_sae, k) = (33, 7, 40, 3);
    let mut r = rng(3);

    // Training: AuxK on, metrics asked for on some steps, f32 and f16 batches alternating
    // between the two upload buffers.
    let mut params: SaeParams = SaeParams::init_topk(d_in, d_sae, k, 1);
    params.b_dec = vec![0.1; d_in];
    let auxk = AuxKConfig {
        alpha: 1.0 / 32.0,
        k_aux: 4,
    };
    let mut trainer =
        Trainer::new(gpu, &params, rows, AdamConfig::default(), 50, Some(auxk)).unwrap();
    let mut feed = Feed::new(gpu, rows, d_in).unwrap();
    let mut step = 0u64;
    let mut run = |trainer: &mut Trainer<'static>, n: usize| {
        for _ in 0..n {
            step += 1;
            let x = random_vec(&mut r, rows * d_in, 1.0);
            let batch = if step.is_multiple_of(3) {
                f16_batch(&x, rows)
            } else {
                f32_batch(x, rows)
            };
            let args = MemberStep {
                scale: 1.5,
                target_scale: 1.5,
                lr: 1e-3,
                step,
                with_metrics: step.is_multiple_of(2),
                penalty: 0.0,
            };
            feed.step(&batch, [(&mut *trainer, args)]).unwrap();
            trainer.ready_metrics(false).unwrap();
        }
    };
    run(&mut trainer, 4);
    trainer.ready_metrics(true).unwrap();
    let before = gpu.allocations.counts();
    run(&mut trainer, 6);
    let ready = trainer.ready_metrics(true).unwrap();
    assert_nothing_created("training steps", before, gpu.allocations.counts());
    assert!(!ready.is_empty(), "metrics came back");

    // The forward pass of eval / encode / hist / categories, for TopK and a capped ReLU SAE;
    // the last, partial batch as well.
    for activation in [Activation::TopK { k: 5 }, Activation::Relu] {
        let params = random_sae(9, d_in, d_sae, activation.clone());
        let sae = GpuSae::upload(gpu, &params, rows).unwrap();
        for depth in [PassDepth::Codes, PassDepth::Reconstruct] {
            let pass = ForwardPass::new(gpu, &sae, rows, depth).unwrap();
            let batch = |r: &mut rand_chacha::ChaCha8Rng, n| random_vec(r, n * d_in, 1.0);
            for _ in 0..2 {
                pass.run(&batch(&mut r, rows), rows, |_, _| Ok(())).unwrap();
                pass.codes(rows).unwrap();
            }
            let before = gpu.allocations.counts();
            for n in [rows, rows, 5] {
                pass.run(&batch(&mut r, n), n, |_, _| Ok(())).unwrap();
                pass.codes(n).unwrap();
                if depth == PassDepth::Reconstruct {
                    pass.reconstructions(n).unwrap();
                }
                pass.active_counts(n).unwrap();
            }
            assert_nothing_created(
                &format!("{activation:?} {depth:?} batches"),
                before,
                gpu.allocations.counts(),
            );
        }
    }
}
