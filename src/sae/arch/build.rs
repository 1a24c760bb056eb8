//! A trainer for a model: TopK's trainer of its initial weights with its architecture's
//! additions attached. `sae train` (run::train) and `sae bench train` both make theirs here.

use crate::gpu::kernels::optim::AdamConfig;
use crate::gpu::{Gpu, Matmul};
use crate::sae::params::SaeParams;
use crate::sae::trainer::{AuxKConfig, Trainer};

use super::settings::ModelConfig;
use super::spec::{ArchResume, AttachError};

/// How a model is trained, besides the model itself.
#[derive(Clone, Copy, Debug)]
pub struct TrainerOptions {
    pub batch_rows: usize,
    pub adam: AdamConfig,
    /// A latent is dead after this many tokens without firing.
    pub dead_tokens: u64,
    /// AuxK, for the architectures it revives (`ArchSpec::uses_auxk`).
    pub auxk: AuxKConfig,
    /// How the encoder GEMM runs.
    pub matmul: Matmul,
}

/// The trainer of `model` from `params`, with the architecture's own state from a checkpoint
/// when resuming.
pub fn build_trainer<'g>(
    gpu: &'g Gpu,
    params: &SaeParams,
    model: &ModelConfig,
    options: &TrainerOptions,
    resume: Option<&ArchResume>,
) -> Result<Trainer<'g>, AttachError> {
    let spec = model.architecture.spec();
    let auxk = spec.uses_auxk().then_some(options.auxk);
    let trainer = Trainer::new(
        gpu,
        params,
        options.batch_rows,
        options.adam,
        options.dead_tokens,
        auxk,
    )?
    .with_matmul(options.matmul)?;
    spec.attach(trainer, model, resume)
}
