//! BatchTopK's selection, shared by BatchTopK and Matryoshka: of each row's candidates the
//! batch keeps k per row on average, and the inference threshold θ follows the smallest kept
//! value (exported as a SAELens `jumprelu` SAE with θ for every latent).

use crate::gpu::kernels::batch_topk::{launch_batch_topk, state};
use crate::gpu::{Gpu, GpuBuffer, GpuError, GpuResult, Recorder};
use crate::sae::params::Activation;
use crate::sae::trainer::{StepContext, Trainer};

/// θ ← β·θ + (1 − β)·(smallest kept value) every step (SAELens), starting from the first
/// step's value (dictionary_learning) instead of SAELens' 0.
pub const THETA_BETA: f32 = 0.99;

/// Entries each row offers: its 4k largest (at most 512 and d_sae), of which the batch keeps
/// k·B in all. A row can hold at most this many of the batch's kept entries; beyond it, its
/// smallest are dropped.
pub fn row_candidates(k: usize, d_sae: usize) -> usize {
    (4 * k)
        .min(crate::gpu::kernels::topk::MAX_K)
        .min(d_sae)
        .max(k)
}

/// The batch keeps `k` entries per row on average from each row's candidates.
pub struct BatchSelection {
    k: usize,
    /// [batch threshold, θ, smallest kept, unused] (kernels::batch_topk::state).
    state: GpuBuffer,
}

impl BatchSelection {
    /// The selection for `trainer` (whose per-row selection gives each row's candidates),
    /// with θ starting at `theta`.
    pub fn new(trainer: &Trainer<'_>, k: usize, theta: f32) -> GpuResult<BatchSelection> {
        if k == 0 || k > trainer.sae.k {
            return Err(GpuError::Shape {
                kernel: "batch_topk",
                message: format!(
                    "k = {k} must be between 1 and the row candidates ({})",
                    trainer.sae.k
                ),
            });
        }
        let mut initial = [0.0f32; state::COUNT];
        initial[state::THETA] = theta;
        let state = trainer.gpu().upload("batch_topk_state", &initial)?;
        Ok(BatchSelection { k, state })
    }

    /// Records the selection over the batch after each row's.
    pub fn record(&self, rec: &mut Recorder<'_>, step: &StepContext<'_>) -> GpuResult<()> {
        let s = step.shape;
        let keep = self.k * s.rows;
        launch_batch_topk(
            rec,
            &step.fw.top_val,
            s.entries(),
            keep,
            THETA_BETA,
            &self.state,
        )
    }

    /// θ (waits for the GPU).
    pub fn theta(&self, gpu: &Gpu) -> GpuResult<f32> {
        let state: Vec<f32> = gpu.read(&self.state)?;
        Ok(state[state::THETA])
    }

    /// JumpReLU with θ for every latent: how the trained SAE is used.
    pub fn inference_activation(&self, gpu: &Gpu, d_sae: usize) -> GpuResult<Activation> {
        Ok(Activation::JumpRelu {
            threshold: vec![self.theta(gpu)?; d_sae],
        })
    }
}
