//! ReLU + L1, Anthropic's April 2024 update as SAELens' `standard` trains it: every positive
//! pre-activation up to the cap, the loss mean_b ‖x − x̂‖² + λ·mean_b Σᵢ fᵢ·‖W_dec,i‖ with λ
//! warmed up linearly, no unit-norm constraint, gradient clipping; no AuxK (neither SAELens
//! nor dictionary_learning revives this family's dead latents).

use crate::gpu::kernels::penalty::CodePenalty;
use crate::gpu::GpuResult;
use crate::sae::params::SaeParams;
use crate::sae::trainer::Trainer;

use super::penalized::{self, Penalized};
use super::settings::{ArchSettings, ModelConfig};
use super::spec::{ArchResume, ArchSpec, AttachError, SparsityAxis};

pub struct Relu;

impl ArchSpec for Relu {
    fn row_candidates(&self, k: usize, d_sae: usize) -> usize {
        penalized::row_candidates(k, d_sae)
    }

    fn settings(&self) -> &'static [&'static str] {
        &["l1_coefficient", "l1_warmup_steps", "clip_grad_norm", "cap"]
    }

    fn validate(&self, model: &ModelConfig) -> Result<(), String> {
        penalized::non_negative("--l1-coefficient", model.settings.relu.l1_coefficient)?;
        penalized::validate_clip(model)
    }

    fn init(&self, d_in: usize, model: &ModelConfig, seed: u64) -> SaeParams {
        penalized::init(d_in, model, seed)
    }

    fn init_transcoder(
        &self,
        d_in: usize,
        d_out: usize,
        model: &ModelConfig,
        seed: u64,
    ) -> SaeParams {
        penalized::init_transcoder(d_in, d_out, model, seed)
    }

    fn uses_auxk(&self) -> bool {
        false
    }

    fn penalty_at(&self, settings: &ArchSettings, step: u64) -> f64 {
        let relu = &settings.relu;
        penalized::warmed_up(relu.l1_coefficient, relu.l1_warmup_steps, step)
    }

    fn sparsity(&self) -> SparsityAxis {
        SparsityAxis::L1
    }

    fn attach<'g>(
        &self,
        trainer: Trainer<'g>,
        model: &ModelConfig,
        _resume: Option<&ArchResume>,
    ) -> Result<Trainer<'g>, AttachError> {
        Ok(attach(trainer, penalized::clip(model))?)
    }
}

/// Makes `trainer` a ReLU + L1 trainer: its per-row selection (its `k`) caps the codes kept
/// per row; the loss is SAELens' mean squared error plus the L1 penalty (its coefficient
/// comes with each step); with `clip`, the gradient's global norm is clipped to it.
pub fn attach(trainer: Trainer<'_>, clip: Option<f32>) -> GpuResult<Trainer<'_>> {
    let penalized = Penalized::new(&trainer, clip, Some(CodePenalty::L1))?;
    Ok(trainer.with_hooks(penalized))
}
