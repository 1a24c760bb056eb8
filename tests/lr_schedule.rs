//! The learning-rate schedule `sae train` runs: warm-up, the peak, and a linear decay to 0 over
//! the last 20% of the steps by default; `--lr-decay-steps` chooses the decay (0: constant), and
//! config.json records it.

mod common;

use common::{sae_ok, temp_dir};

use sae_wgpu::data::synth::{write_synthetic, SynthConfig};

/// (step, lr) of every logged step of a 20-step run with `flags`, and its config.json.
fn train(name: &str, flags: &[&str]) -> (Vec<(u64, f64)>, serde_json::Value) {
    let dir = temp_dir(name);
    let synth = SynthConfig {
        d_in: 8,
        n_features: 16,
        rows_per_shard: 20 * 32,
        shards: 1,
        ..SynthConfig::default()
    };
    let shards = write_synthetic(&synth, &dir.join("data")).unwrap();
    let out = dir.join("run");
    let mut args = vec![
        "train".to_string(),
        shards[0].display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    let fixed = "--lr 0.01 --lr-warmup-steps 2 --d-sae 16 --k 2 --batch-size 32 \
                 --eval-fraction 0 --log-every 1 --quiet";
    let fixed = fixed.split_whitespace();
    args.extend(fixed.chain(flags.iter().copied()).map(str::to_string));
    sae_ok(&args);
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lrs = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|m| (m["step"].as_u64().unwrap(), m["lr"].as_f64().unwrap()))
        .collect();
    let config = std::fs::read_to_string(out.join("config.json")).unwrap();
    (lrs, serde_json::from_str(&config).unwrap())
}

/// The rate of the optimiser step with 0-based index `step` (metrics.jsonl counts steps done).
fn lr_at(lrs: &[(u64, f64)], step: u64) -> f64 {
    lrs.iter().find(|(s, _)| *s == step + 1).unwrap().1
}

#[test]
fn the_default_decays_over_the_last_fifth() {
    if common::gpu().is_none() {
        return;
    }
    let (lrs, config) = train("lr-default", &[]);
    assert_eq!(config["config"]["lr_decay_steps"], 4, "{config}");
    for step in [2, 10, 15] {
        assert!((lr_at(&lrs, step) - 0.01).abs() < 1e-9, "{lrs:?}");
    }
    let late = lr_at(&lrs, 18);
    assert!(
        (late - 0.005).abs() < 1e-9,
        "step 18 of 20 decays to half: {lrs:?}"
    );
}

#[test]
fn decay_steps_choose_constant_or_sparsify_schedule() {
    if common::gpu().is_none() {
        return;
    }
    let (constant, _) = train("lr-constant", &["--lr-decay-steps", "0"]);
    assert!((lr_at(&constant, 19) - 0.01).abs() < 1e-9, "{constant:?}");
    let (whole, _) = train("lr-whole", &["--lr-decay-steps", "20"]);
    // Decay from the warm-up on: 18 steps down to 0, so half way at step 11.
    assert!((lr_at(&whole, 11) - 0.005).abs() < 1e-9, "{whole:?}");
}
