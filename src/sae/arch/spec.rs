//! What an architecture is, as one trait: its selection's width, the settings it reads and
//! their checks, its initial weights, whether AuxK revives it, its penalty's schedule, what a
//! sweep varies, the layouts it exports to, and what it adds to a trainer (its
//! [`StepHooks`](crate::sae::trainer::StepHooks)).

use crate::gpu::GpuError;
use crate::sae::params::SaeParams;
use crate::sae::trainer::Trainer;

use super::settings::{ArchSettings, ModelConfig};

/// An architecture's state restored from a checkpoint.
#[derive(Clone, Debug, Default)]
pub struct ArchResume {
    /// BatchTopK's inference threshold θ.
    pub theta: Option<f32>,
    /// JumpReLU's trained threshold parameter, one per latent.
    pub threshold_param: Option<Vec<f32>>,
}

/// What sets a member's sparsity in a sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SparsityAxis {
    /// k (the TopK family).
    K,
    /// ReLU + L1's λ (`l1_coefficient`).
    L1,
    /// JumpReLU's λ (`l0_coefficient`).
    L0,
}

/// Why an architecture could not be added to a trainer.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The GPU refused (out of memory, or a shape its kernels cannot take).
    #[error(transparent)]
    Gpu(#[from] GpuError),
    /// The settings or the checkpoint do not fit the architecture.
    #[error("{0}")]
    Invalid(String),
}

pub trait ArchSpec: Sync {
    /// Entries each row offers to the selection, of `k` kept (the cap for the ReLU family).
    fn row_candidates(&self, k: usize, _d_sae: usize) -> usize {
        k
    }

    /// The settings ([`ArchSettings`]'s keys) this architecture reads; giving one to a run
    /// of architectures none of which reads it is an error.
    fn settings(&self) -> &'static [&'static str] {
        &[]
    }

    /// Checks its settings (k and d_sae are checked already).
    fn validate(&self, _model: &ModelConfig) -> Result<(), String> {
        Ok(())
    }

    /// The weights a new run starts from (b_dec is set from data afterwards).
    fn init(&self, d_in: usize, model: &ModelConfig, seed: u64) -> SaeParams {
        let candidates = self.row_candidates(model.k, model.d_sae);
        SaeParams::init_topk(d_in, model.d_sae, candidates, seed)
    }

    /// The weights a new transcoder (input width `d_in`, target width `d_out`) starts from:
    /// sparsify's for the TopK family, the encoder of an SAE's start and a zero decoder (b_dec
    /// and b_enc are set from data afterwards).
    fn init_transcoder(
        &self,
        d_in: usize,
        d_out: usize,
        model: &ModelConfig,
        seed: u64,
    ) -> SaeParams {
        let encoder = self.init(d_in, model, seed);
        let zeros = vec![0.0; model.d_sae * d_out];
        encoder.into_transcoder(d_out, zeros, model.skip)
    }

    /// Whether AuxK revives its dead latents.
    fn uses_auxk(&self) -> bool {
        true
    }

    /// Whether sparsify can run it; otherwise it exports SAELens' layout alone.
    fn exports_sparsify(&self) -> bool {
        false
    }

    /// Its sparsity coefficient at (0-based) `step`; 0 for architectures without one.
    fn penalty_at(&self, _settings: &ArchSettings, _step: u64) -> f64 {
        0.0
    }

    /// What a sweep varies for this architecture's sparsity.
    fn sparsity(&self) -> SparsityAxis {
        SparsityAxis::K
    }

    /// Adds what the architecture changes to a TopK trainer of its initial weights, with its
    /// own state from a checkpoint when resuming.
    fn attach<'g>(
        &self,
        trainer: Trainer<'g>,
        model: &ModelConfig,
        resume: Option<&ArchResume>,
    ) -> Result<Trainer<'g>, AttachError>;
}
