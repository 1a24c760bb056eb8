//! A run's configuration, saved in `config.json` (under "config") and read back by
//! `--resume`: what it trains on, the model, the optimiser, the initialisation, AuxK and what
//! it writes. The groups are flattened, so `config.json` keeps one flat object whose keys are
//! the flags' names.

use std::path::PathBuf;

use anyhow::{anyhow, bail};
use serde::{Deserialize, Serialize};

use crate::choice::Choice;
use crate::gpu::kernels::optim::AdamConfig;
use crate::gpu::MatmulChoice;
use crate::sae::arch::{Architecture, ModelConfig};
use crate::sae::schedule::Schedule;
use crate::sae::trainer::AuxKConfig;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    #[serde(flatten)]
    pub data: DataConfig,
    #[serde(flatten)]
    pub model: ModelConfig,
    #[serde(flatten)]
    pub optim: OptimConfig,
    #[serde(flatten)]
    pub init: InitConfig,
    #[serde(flatten)]
    pub auxk: AuxKSettings,
    #[serde(flatten)]
    pub output: OutputConfig,
    #[serde(flatten)]
    pub compute: ComputeConfig,
}

/// The data and its order: runs trained on the same batches (a sweep) share all of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DataConfig {
    pub inputs: Vec<PathBuf>,
    pub tensor: String,
    /// A transcoder's targets, file for file beside `inputs` (`--target`); empty with
    /// `target_tensor`: the targets are that tensor of the inputs' own files.
    #[serde(default)]
    pub targets: Vec<PathBuf>,
    /// The targets' tensor (`--target-tensor`; `None` with `targets`: `tensor`).
    #[serde(default)]
    pub target_tensor: Option<String>,
    pub eval_inputs: Vec<PathBuf>,
    /// The held-out targets beside `eval_inputs` (`--eval-target`; empty with
    /// `target_tensor`: that tensor of the held-out files).
    #[serde(default)]
    pub eval_targets: Vec<PathBuf>,
    /// Fraction of each training shard held out for evaluation (when no eval shards).
    pub eval_fraction: f64,
    pub batch_size: usize,
    pub steps: u64,
    pub shuffle_buffer: usize,
    /// Seed of the data order (shard order and shuffle); `None`: the init seed. A sweep gives
    /// every member the same one, so its members see the same batches.
    #[serde(default)]
    pub data_seed: Option<u64>,
    pub skip_nonfinite: bool,
}

/// Adam and the learning-rate schedule (linear warmup, constant, then linear decay to 0 over
/// the last `lr_decay_steps`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OptimConfig {
    pub lr: f64,
    pub lr_warmup_steps: u64,
    /// Steps at the end over which the rate decays linearly to 0; `None` (runs written before
    /// the setting existed): every step after the warmup.
    #[serde(default)]
    pub lr_decay_steps: Option<u64>,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
}

impl OptimConfig {
    /// The learning-rate schedule's phases.
    pub fn schedule(&self) -> Schedule {
        Schedule {
            warmup: self.lr_warmup_steps,
            decay: self.lr_decay_steps.unwrap_or(u64::MAX),
        }
    }
}

/// Where the weights start.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InitConfig {
    pub seed: u64,
    pub b_dec_init: BDecInit,
    pub normalize_activations: bool,
    /// Rows used to estimate b_dec's geometric median and the input scale.
    pub init_sample_rows: usize,
}

/// AuxK (for the architectures it revives) and when a latent counts as dead.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuxKSettings {
    pub auxk_alpha: f32,
    pub auxk_k: usize,
    pub dead_tokens: u64,
}

/// What the run writes, and when.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutputConfig {
    pub eval_every: u64,
    pub checkpoint_every: u64,
    pub log_every: u64,
    pub format: ExportFormat,
}

/// How the GPU computes (never what: a run's figures do not depend on it beyond f16 rounding).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ComputeConfig {
    /// The encoder GEMM: f16 on the matrix units where the adapter has them (`auto`), or as
    /// asked. Runs written before it was recorded ran f32.
    #[serde(default = "f32_matmul")]
    pub matmul: MatmulChoice,
}

fn f32_matmul() -> MatmulChoice {
    MatmulChoice::F32
}

impl DataConfig {
    /// Whether rows come with targets (a transcoder's data).
    pub fn is_paired(&self) -> bool {
        !self.targets.is_empty() || self.target_tensor.is_some()
    }

    /// The tensor the targets are read from.
    pub fn target_tensor(&self) -> &str {
        self.target_tensor.as_deref().unwrap_or(&self.tensor)
    }

    /// The target files beside `inputs` (the inputs themselves with `--target-tensor` alone).
    pub fn target_paths(&self) -> &[PathBuf] {
        if self.targets.is_empty() {
            &self.inputs
        } else {
            &self.targets
        }
    }

    /// The held-out target files beside `eval_inputs`, or why there are none.
    pub fn eval_target_paths(&self) -> anyhow::Result<&[PathBuf]> {
        if !self.eval_targets.is_empty() {
            Ok(&self.eval_targets)
        } else if self.targets.is_empty() {
            Ok(&self.eval_inputs)
        } else {
            bail!("--eval with --target needs the held-out targets beside it: --eval-target")
        }
    }
}

impl TrainConfig {
    /// The seed of the data order.
    pub fn data_seed(&self) -> u64 {
        self.data.data_seed.unwrap_or(self.init.seed)
    }

    /// Names the first setting that must be shared by runs trained on the same batches and
    /// differs between `self` and `other`.
    pub fn data_mismatch(&self, other: &TrainConfig) -> Option<&'static str> {
        let (a, b) = (&self.data, &other.data);
        let same = [
            ("inputs", a.inputs == b.inputs),
            ("tensor", a.tensor == b.tensor),
            ("targets", a.targets == b.targets),
            ("target tensor", a.target_tensor == b.target_tensor),
            ("eval inputs", a.eval_inputs == b.eval_inputs),
            ("eval targets", a.eval_targets == b.eval_targets),
            ("eval fraction", a.eval_fraction == b.eval_fraction),
            ("batch size", a.batch_size == b.batch_size),
            ("steps", a.steps == b.steps),
            ("shuffle buffer", a.shuffle_buffer == b.shuffle_buffer),
            ("data seed", self.data_seed() == other.data_seed()),
            ("skip_nonfinite", a.skip_nonfinite == b.skip_nonfinite),
        ];
        same.into_iter().find(|(_, s)| !s).map(|(name, _)| name)
    }

    pub fn adam(&self) -> AdamConfig {
        AdamConfig {
            beta1: self.optim.adam_beta1,
            beta2: self.optim.adam_beta2,
            eps: self.optim.adam_eps,
        }
    }

    pub fn auxk(&self) -> AuxKConfig {
        AuxKConfig {
            alpha: self.auxk.auxk_alpha,
            k_aux: self.auxk.auxk_k,
        }
    }

    /// Whether AuxK trains (the TopK family, with a positive weight).
    pub fn uses_auxk(&self) -> bool {
        self.auxk.auxk_alpha > 0.0 && self.model.architecture.spec().uses_auxk()
    }

    /// Validates hyperparameters against the data (inputs of width `d_in`, targets of width
    /// `d_out`: d_in for an SAE) before anything runs.
    pub fn validate(&self, d_in: usize, d_out: usize) -> anyhow::Result<()> {
        self.model.validate(d_in).map_err(|e| anyhow!(e))?;
        let architecture = self.model.architecture;
        let format = self.output.format;
        if !architecture.spec().exports_sparsify() && format != ExportFormat::Saelens {
            bail!(
                "--format {}: sparsify has no inference path for --architecture {}; use --format saelens (its default)",
                format.name(),
                architecture.name()
            );
        }
        let model = &self.model;
        if model.transcoder != self.data.is_paired() {
            bail!("a transcoder needs targets: --target FILES… or --target-tensor NAME");
        }
        if model.skip && !model.transcoder {
            bail!("--skip adds a transcoder's skip connection: give --target or --target-tensor");
        }
        if model.transcoder && format.sparsify() && d_out != d_in {
            bail!(
                "--format {}: sparsify's transcoders write what they read (d_in {d_in}, the targets have {d_out}); SAELens' layout takes the other architectures' transcoders",
                format.name()
            );
        }
        if model.transcoder && format.saelens() && architecture == Architecture::TopK {
            bail!(
                "--format {}: SAELens has no TopK transcoder; use --format sparsify (for targets as wide as the inputs) or --architecture batchtopk, which exports as jumprelu_transcoder",
                format.name()
            );
        }
        if self.data.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        let fraction = self.data.eval_fraction;
        if !(0.0..1.0).contains(&fraction) {
            bail!("--eval-fraction must be in [0, 1), got {fraction}");
        }
        if !(self.optim.lr.is_finite() && self.optim.lr >= 0.0) {
            bail!("--lr must be a finite non-negative number");
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BDecInit {
    GeometricMedian,
    Mean,
    Zeros,
}

impl Choice for BDecInit {
    const CHOICES: &'static [(&'static str, Self, &'static str)] = &[
        (
            "geometric-median",
            BDecInit::GeometricMedian,
            "Weiszfeld geometric median of a sample (openai/sparse_autoencoder)",
        ),
        ("mean", BDecInit::Mean, "Mean of the first batch (sparsify)"),
        ("zeros", BDecInit::Zeros, "Zeros"),
    ];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    Sparsify,
    Saelens,
    Both,
}

impl Choice for ExportFormat {
    const CHOICES: &'static [(&'static str, Self, &'static str)] = &[
        ("sparsify", ExportFormat::Sparsify, "sparsify's layout"),
        ("saelens", ExportFormat::Saelens, "SAELens' layout"),
        ("both", ExportFormat::Both, "both layouts"),
    ];
}

impl ExportFormat {
    pub fn sparsify(self) -> bool {
        matches!(self, ExportFormat::Sparsify | ExportFormat::Both)
    }

    pub fn saelens(self) -> bool {
        matches!(self, ExportFormat::Saelens | ExportFormat::Both)
    }
}

/// The layouts a run exports unless told otherwise: both for TopK; SAELens alone for the
/// other architectures, which sparsify cannot run.
/// The layouts an SAE (or a transcoder) of `architecture` is written in unless asked: both
/// where sparsify runs it, else SAELens'. A TopK transcoder gets sparsify's alone (SAELens has
/// no TopK transcoder).
pub fn default_format(architecture: Architecture, transcoder: bool) -> ExportFormat {
    match (architecture.spec().exports_sparsify(), transcoder) {
        (true, false) => ExportFormat::Both,
        (true, true) => ExportFormat::Sparsify,
        (false, _) => ExportFormat::Saelens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run written before `lr_decay_steps` existed resumes on the schedule it started with:
    /// decay from the warm-up on.
    #[test]
    fn runs_without_decay_steps_keep_the_old_schedule() {
        let json = r#"{"lr": 1.0, "lr_warmup_steps": 2, "adam_beta1": 0.9,
                       "adam_beta2": 0.999, "adam_eps": 1e-8}"#;
        let optim: OptimConfig = serde_json::from_str(json).unwrap();
        let lr = crate::sae::schedule::lr_at(1.0, 6, optim.schedule(), 10);
        assert!((lr - 0.5).abs() < 1e-12, "{lr}");
    }
}
