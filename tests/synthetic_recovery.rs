//! `sae train` on synthetic data from a known dictionary must recover the features: mean max
//! cosine similarity (MMCS) of learned decoder rows to the true features ≥ 0.95.

mod common;

use std::path::PathBuf;

use common::gpu;
use safetensors::SafeTensors;
use sae_wgpu::data::synth::{mmcs, write_synthetic, SynthConfig};
use sae_wgpu::sae::formats::{load_sae, read_tensor_f32};
use sae_wgpu::sae::train::{train, BDecInit, ExportFormat, RunOptions, TrainConfig};

pub fn tiny_config(inputs: Vec<PathBuf>, d_sae: usize, k: usize, steps: u64) -> TrainConfig {
    TrainConfig {
        inputs,
        tensor: "activations".into(),
        eval_inputs: vec![],
        eval_fraction: 0.02,
        eval_every: 0,
        k,
        d_sae,
        batch_size: 128,
        lr: 1e-2,
        lr_warmup_steps: steps / 20,
        steps,
        adam_beta1: 0.9,
        adam_beta2: 0.999,
        adam_eps: 1e-8,
        seed: 0,
        shuffle_buffer: 4096,
        b_dec_init: BDecInit::GeometricMedian,
        normalize_activations: false,
        auxk_alpha: 1.0 / 32.0,
        auxk_k: 8,
        dead_tokens: 5_000,
        checkpoint_every: 0,
        log_every: 50,
        skip_nonfinite: false,
        format: ExportFormat::Sparsify,
        init_sample_rows: 4096,
    }
}

#[test]
fn training_recovers_a_planted_dictionary() {
    let Some(gpu) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("sae-synth-recovery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let synth = SynthConfig {
        d_in: 16,
        n_features: 32,
        rows_per_shard: 20_000,
        shards: 1,
        mean_active: 3.0,
        power_law_exponent: 0.5,
        noise_std: 0.0,
        seed: 1,
    };
    let shards = write_synthetic(&synth, &dir.join("data")).unwrap();
    let config = tiny_config(shards, 64, 4, 900);
    let options = RunOptions {
        run_dir: dir.join("run"),
        resume: false,
        overwrite: false,
        quiet: true,
    };
    let report = train(gpu, Some(config), &options).unwrap();
    let learned = load_sae(&dir.join("run")).unwrap().params;
    let truth_path = dir.join("data/true_dictionary.safetensors");
    let bytes = std::fs::read(&truth_path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let truth = read_tensor_f32(&st, "features", &[32, 16], &truth_path).unwrap();
    let score = mmcs(&truth, &learned.w_dec, 16);
    let heldout = report.heldout.unwrap();
    eprintln!("MMCS {score:.4}, held-out FVU {:.4}, L0 {:.2}", heldout.fvu, heldout.l0);
    assert!(score >= 0.95, "MMCS {score:.4} < 0.95 (held-out FVU {:.4})", heldout.fvu);
    let _ = std::fs::remove_dir_all(&dir);
}
