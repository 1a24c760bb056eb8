//! Training is deterministic (same seed, data and adapter → the same weights, bit for bit),
//! and a run stopped after a checkpoint and resumed ends with exactly the weights of an
//! uninterrupted run.

mod common;

use std::path::{Path, PathBuf};

use common::gpu;
use common::training::{run_options as options, tiny_config};
use sae_wgpu::data::synth::{write_synthetic, SynthConfig};
use sae_wgpu::run::train::train;
use sae_wgpu::run::train::TrainConfig;
use sae_wgpu::sae::formats::load_sae;
use sae_wgpu::sae::params::SaeParams;

fn data(dir: &Path) -> Vec<PathBuf> {
    let synth = SynthConfig {
        d_in: 12,
        n_features: 24,
        rows_per_shard: 3000,
        shards: 2,
        mean_active: 3.0,
        seed: 5,
        ..SynthConfig::default()
    };
    write_synthetic(&synth, &dir.join("data")).unwrap()
}

fn config(shards: Vec<PathBuf>) -> TrainConfig {
    let mut config = tiny_config(shards, 48, 4, 40);
    config.data.batch_size = 64;
    // Dead latents appear within the run, so AuxK's state is part of what must resume.
    config.auxk.dead_tokens = 256;
    config.output.checkpoint_every = 10;
    config
}

fn weights(dir: &Path) -> SaeParams {
    load_sae(dir).unwrap().params
}

fn same_bits(a: &SaeParams, b: &SaeParams) -> bool {
    let bits = |p: &SaeParams| -> Vec<u32> {
        [&p.w_enc, &p.b_enc, &p.w_dec, &p.b_dec]
            .iter()
            .flat_map(|v| v.iter().map(|x| x.to_bits()))
            .collect()
    };
    bits(a) == bits(b)
}

#[test]
fn same_seed_same_weights_and_resume_matches_uninterrupted() {
    let Some(gpu) = gpu() else { return };
    let root = std::env::temp_dir().join(format!("sae-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let shards = data(&root);

    let first = root.join("first");
    train(
        gpu,
        Some(config(shards.clone())),
        &options(&first, false, None),
    )
    .unwrap();
    let second = root.join("second");
    train(
        gpu,
        Some(config(shards.clone())),
        &options(&second, false, None),
    )
    .unwrap();
    assert!(
        same_bits(&weights(&first), &weights(&second)),
        "two runs with the same seed differ"
    );

    let interrupted = root.join("interrupted");
    let stopped = train(
        gpu,
        Some(config(shards.clone())),
        &options(&interrupted, false, Some(23)),
    )
    .unwrap();
    assert_eq!(stopped.steps, 23);
    assert!(
        !interrupted.join("sparsify").exists(),
        "a stopped run must not export"
    );
    let resumed = train(gpu, None, &options(&interrupted, true, None)).unwrap();
    assert_eq!(resumed.steps, 40);
    assert!(
        same_bits(&weights(&first), &weights(&interrupted)),
        "resumed run differs from the uninterrupted one"
    );
    // The metrics log has one line per logged step, with no duplicates from the restart.
    let steps: Vec<u64> = std::fs::read_to_string(interrupted.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()?
                .get("step")?
                .as_u64()
        })
        .collect();
    let mut unique = steps.clone();
    unique.dedup();
    assert_eq!(
        steps, unique,
        "metrics lines repeat after resume: {steps:?}"
    );

    let different = root.join("different-seed");
    let mut other = config(shards);
    other.init.seed = 1;
    train(gpu, Some(other), &options(&different, false, None)).unwrap();
    assert!(
        !same_bits(&weights(&first), &weights(&different)),
        "the seed has no effect"
    );
    let _ = std::fs::remove_dir_all(&root);
}
