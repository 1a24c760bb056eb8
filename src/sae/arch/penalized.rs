//! The ReLU family's step, shared by ReLU + L1 and JumpReLU: SAELens' mean squared error
//! instead of FVU, a penalty on the codes weighted by the decoder norms (so no unit-norm
//! constraint), and optional clipping of the gradient's global norm.

use crate::gpu::kernels::backward::LossScale;
use crate::gpu::kernels::penalty::{
    launch_penalty_code_grad, launch_penalty_decoder_grad, launch_row_norms, CodePenalty,
};
use crate::gpu::{Gpu, GpuBuffer, GpuResult, Recorder};
use crate::sae::forward::GpuSae;
use crate::sae::params::{Activation, SaeParams};
use crate::sae::trainer::{slot, Entries, StepContext, StepHooks, Trainer};

use super::settings::ModelConfig;

/// Anthropic's April 2024 initialisation (SAELens `standard`): decoder rows at norm 0.1 and
/// W_enc = W_decᵀ.
pub fn init(d_in: usize, model: &ModelConfig, seed: u64) -> SaeParams {
    let candidates = row_candidates(model.k, model.d_sae);
    SaeParams::init_relu(d_in, model.d_sae, candidates, seed)
}

/// The April 2024 initialisation made a transcoder's: decoder rows of width d_out at norm 0.1,
/// and the encoder's columns random directions at norm 0.1 too (W_enc = W_decᵀ cannot hold
/// when the widths differ, so the directions are drawn for each side).
pub fn init_transcoder(d_in: usize, d_out: usize, model: &ModelConfig, seed: u64) -> SaeParams {
    let encoder = init(d_in, model, seed);
    let decoder = init(d_out, model, seed ^ 0x00de_c0de);
    encoder.into_transcoder(d_out, decoder.w_dec, model.skip)
}

/// Every code above the threshold is kept, up to the cap (`k`).
pub fn row_candidates(cap: usize, d_sae: usize) -> usize {
    cap.min(d_sae)
}

/// λ reached linearly over `warmup` steps, at (0-based) `step`.
pub fn warmed_up(lambda: f64, warmup: u64, step: u64) -> f64 {
    lambda * ((step + 1) as f64 / warmup.max(1) as f64).min(1.0)
}

/// The clipping norm the settings ask for.
pub fn clip(model: &ModelConfig) -> Option<f32> {
    model.settings.penalized.clip_grad_norm.map(|c| c as f32)
}

/// The clipping norm the settings ask for, checked.
pub fn validate_clip(model: &ModelConfig) -> Result<(), String> {
    if let Some(clip) = model.settings.penalized.clip_grad_norm {
        if !(clip.is_finite() && clip > 0.0) {
            return Err(format!("--clip-grad-norm must be positive, got {clip}"));
        }
    }
    Ok(())
}

/// A finite non-negative setting, or an error naming its flag.
pub fn non_negative(flag: &str, value: f64) -> Result<(), String> {
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!(
            "{flag} must be a finite non-negative number, got {value}"
        ));
    }
    Ok(())
}

/// The family's buffers and choices within a step.
pub struct Penalized {
    /// ‖W_dec,i‖ of every latent, as of the step's start.
    pub norms: GpuBuffer,
    clip: Option<f32>,
    /// The penalty on the codes (`None`: JumpReLU's step penalty, which only θ sees).
    codes: Option<CodePenalty>,
}

impl Penalized {
    pub fn new(
        trainer: &Trainer<'_>,
        clip: Option<f32>,
        codes: Option<CodePenalty>,
    ) -> GpuResult<Penalized> {
        let gpu = trainer.gpu();
        let stats = trainer.stats();
        let mut unit = vec![0.0f32; stats.len];
        unit[slot::UNIT] = 1.0;
        gpu.write(stats, &unit)?;
        Ok(Penalized {
            norms: gpu.storage::<f32>("decoder norms", trainer.sae.d_sae)?,
            clip,
            codes,
        })
    }

    /// The decoder norms, then the gradient scale of SAELens' mean over the rows of
    /// ‖x − x̂‖².
    pub fn reconstruction_loss(
        &self,
        rec: &mut Recorder<'_>,
        step: &StepContext<'_>,
    ) -> GpuResult<LossScale> {
        let d_out = step.shape.d_out;
        for block in &step.sae.blocks {
            launch_row_norms(rec, &block.w_dec, block.range, d_out, &self.norms)?;
        }
        Ok(LossScale {
            constant: 2.0 / step.shape.rows as f32,
            variance_slot: slot::UNIT,
            factor_slot: None,
        })
    }

    /// The code penalty's gradients on the codes and the decoder rows.
    pub fn code_grads(
        &self,
        rec: &mut Recorder<'_>,
        step: &StepContext<'_>,
        entries: &Entries<'_>,
    ) -> GpuResult<()> {
        let Some(penalty) = self.codes else {
            return Ok(());
        };
        let (coeff, n) = (step.coeff, step.shape.entries());
        for (block, st) in step.sae.blocks.iter().zip(step.blocks) {
            launch_penalty_code_grad(
                rec,
                entries.top_idx,
                entries.top_val,
                &self.norms,
                block.range,
                n,
                penalty,
                coeff,
                entries.code_grad,
            )?;
            launch_penalty_decoder_grad(
                rec,
                entries.index,
                entries.top_val,
                &block.w_dec,
                &self.norms,
                block.range,
                penalty,
                coeff,
                &st.w_dec.grad,
            )?;
        }
        Ok(())
    }
}

/// ReLU + L1's step is the family's step as it is; JumpReLU's adds its thresholds to it.
impl StepHooks for Penalized {
    fn reconstruction_loss(
        &self,
        rec: &mut Recorder<'_>,
        step: &StepContext<'_>,
    ) -> GpuResult<LossScale> {
        Penalized::reconstruction_loss(self, rec, step)
    }

    fn code_grads(
        &self,
        rec: &mut Recorder<'_>,
        step: &StepContext<'_>,
        entries: &Entries<'_>,
    ) -> GpuResult<()> {
        Penalized::code_grads(self, rec, step, entries)
    }

    fn unit_norm_decoder(&self) -> bool {
        false
    }

    fn clip(&self) -> Option<f32> {
        self.clip
    }

    fn inference_activation(&self, _gpu: &Gpu, _sae: &GpuSae) -> GpuResult<Option<Activation>> {
        Ok(Some(Activation::Relu))
    }
}
