//! A small, fast training configuration for tests on lavapipe.

#![allow(dead_code)]

use std::path::PathBuf;

use std::path::Path;

use sae_wgpu::run::train::{
    AuxKSettings, BDecInit, ComputeConfig, DataConfig, ExportFormat, InitConfig, OptimConfig,
    OutputConfig, RunOptions, TrainConfig,
};
use sae_wgpu::sae::arch::{ArchSettings, JumpReluSettings, ModelConfig};

pub fn tiny_config(inputs: Vec<PathBuf>, d_sae: usize, k: usize, steps: u64) -> TrainConfig {
    TrainConfig {
        data: DataConfig {
            inputs,
            tensor: "activations".into(),
            targets: vec![],
            target_tensor: None,
            eval_inputs: vec![],
            eval_targets: vec![],
            eval_fraction: 0.02,
            batch_size: 128,
            steps,
            shuffle_buffer: 4096,
            data_seed: None,
            skip_nonfinite: false,
        },
        model: ModelConfig {
            architecture: Default::default(),
            settings: ArchSettings {
                jumprelu: JumpReluSettings {
                    jumprelu_bandwidth: 0.05,
                    jumprelu_init_threshold: 0.01,
                    ..Default::default()
                },
                ..Default::default()
            },
            k,
            d_sae,
            transcoder: false,
            skip: false,
        },
        optim: OptimConfig {
            lr: 1e-2,
            lr_warmup_steps: steps / 20,
            lr_decay_steps: None,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
        },
        init: InitConfig {
            seed: 0,
            b_dec_init: BDecInit::GeometricMedian,
            normalize_activations: false,
            init_sample_rows: 4096,
        },
        auxk: AuxKSettings {
            auxk_alpha: 1.0 / 32.0,
            auxk_k: 8,
            dead_tokens: 5_000,
        },
        output: OutputConfig {
            eval_every: 0,
            checkpoint_every: 0,
            log_every: 50,
            format: ExportFormat::Sparsify,
        },
        compute: ComputeConfig::default(),
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
