//! BatchTopK (Bussmann et al. 2024): the k·B largest ReLU pre-activations of the whole batch
//! of B rows, with an inference threshold θ; exported as SAELens `jumprelu` with θ for every
//! latent. The decoder stays unit-norm, as for TopK (dictionary_learning's choice).

use crate::gpu::{Gpu, GpuResult, Recorder};
use crate::sae::forward::GpuSae;
use crate::sae::params::Activation;
use crate::sae::trainer::{StepContext, StepHooks, Trainer};

use super::batch_selection::{self, BatchSelection};
use super::settings::ModelConfig;
use super::spec::{ArchResume, ArchSpec, AttachError};

pub struct BatchTopK;

impl ArchSpec for BatchTopK {
    fn row_candidates(&self, k: usize, d_sae: usize) -> usize {
        batch_selection::row_candidates(k, d_sae)
    }

    fn attach<'g>(
        &self,
        trainer: Trainer<'g>,
        model: &ModelConfig,
        resume: Option<&ArchResume>,
    ) -> Result<Trainer<'g>, AttachError> {
        let theta = resume.and_then(|r| r.theta).unwrap_or(0.0);
        Ok(attach(trainer, model.k, theta)?)
    }
}

/// Makes `trainer` a BatchTopK trainer: its per-row selection gives each row's candidates, of
/// which the batch keeps `k` per row on average; θ starts at `theta`.
pub fn attach(trainer: Trainer<'_>, k: usize, theta: f32) -> GpuResult<Trainer<'_>> {
    let selection = BatchSelection::new(&trainer, k, theta)?;
    Ok(trainer.with_hooks(Step(selection)))
}

struct Step(BatchSelection);

impl StepHooks for Step {
    fn select(&self, rec: &mut Recorder<'_>, step: &StepContext<'_>) -> GpuResult<()> {
        self.0.record(rec, step)
    }

    fn theta(&self, gpu: &Gpu) -> GpuResult<Option<f32>> {
        self.0.theta(gpu).map(Some)
    }

    fn inference_activation(&self, gpu: &Gpu, sae: &GpuSae) -> GpuResult<Option<Activation>> {
        self.0.inference_activation(gpu, sae.d_sae).map(Some)
    }
}
