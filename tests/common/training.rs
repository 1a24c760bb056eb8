//! A small, fast training configuration for tests on lavapipe.

#![allow(dead_code)]

use std::path::PathBuf;

use std::path::Path;

use sae_wgpu::run::train::{BDecInit, ExportFormat, RunOptions, TrainConfig};

pub fn tiny_config(inputs: Vec<PathBuf>, d_sae: usize, k: usize, steps: u64) -> TrainConfig {
    TrainConfig {
        inputs,
        tensor: "activations".into(),
        eval_inputs: vec![],
        eval_fraction: 0.02,
        eval_every: 0,
        architecture: Default::default(),
        matryoshka_widths: vec![],
        l1_coefficient: 0.0,
        l1_warmup_steps: 0,
        clip_grad_norm: None,
        l0_coefficient: 0.0,
        l0_warmup_steps: 0,
        l0_penalty: Default::default(),
        jumprelu_bandwidth: 0.05,
        jumprelu_init_threshold: 0.01,
        jumprelu_threshold_param: Default::default(),
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
        data_seed: None,
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

/// Quiet run options for `train` in `dir`.
pub fn run_options(dir: &Path, resume: bool, stop_after: Option<u64>) -> RunOptions {
    RunOptions {
        run_dir: dir.to_path_buf(),
        resume,
        overwrite: false,
        quiet: true,
        tune: false,
        stop_after,
    }
}
