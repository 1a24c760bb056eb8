//! `sae train` on synthetic data from a known dictionary must recover the features: mean max
//! cosine similarity (MMCS) of learned decoder rows to the true features ≥ 0.95.

mod common;

use common::gpu;
use common::training::tiny_config;
use sae_wgpu::data::synth::{mmcs, write_synthetic, SynthConfig};
use sae_wgpu::run::train::{train, RunOptions};
use sae_wgpu::sae::formats::{load_sae, read_tensor_f32};
use safetensors::SafeTensors;

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
        circle: None,
    };
    let shards = write_synthetic(&synth, &dir.join("data")).unwrap();
    let config = tiny_config(shards, 64, 4, 900);
    let options = RunOptions {
        run_dir: dir.join("run"),
        resume: false,
        overwrite: false,
        quiet: true,
        stop_after: None,
        tune: false,
    };
    let report = train(gpu, Some(config), &options).unwrap();
    let learned = load_sae(&dir.join("run")).unwrap().params;
    let truth_path = dir
        .join("data")
        .join(sae_wgpu::data::synth::TRUE_DICTIONARY);
    let bytes = std::fs::read(&truth_path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let truth = read_tensor_f32(&st, "features", &[32, 16], &truth_path).unwrap();
    let score = mmcs(&truth, &learned.w_dec, 16);
    let heldout = report.heldout.unwrap();
    eprintln!(
        "MMCS {score:.4}, held-out FVU {:.4}, L0 {:.2}",
        heldout.fvu, heldout.l0
    );
    assert!(
        score >= 0.95,
        "MMCS {score:.4} < 0.95 (held-out FVU {:.4})",
        heldout.fvu
    );
    let _ = std::fs::remove_dir_all(&dir);
}
