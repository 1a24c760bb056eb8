//! JumpReLU (Rajamanoharan et al. 2024), as SAELens' `jumprelu` trains it: ReLU + L1's
//! initialisation, loss and clipping, with a threshold θᵢ per latent trained through the
//! rectangle-kernel straight-through estimators, and an L0 penalty (`step`: λ·mean_b Σᵢ
//! H(hᵢ − θᵢ), which only θ sees; `tanh`: λ·mean_b Σᵢ tanh(4·fᵢ·‖W_dec,i‖)). Exported as
//! SAELens `jumprelu` with `threshold` = θ.

use crate::gpu::kernels::backward::LossScale;
use crate::gpu::kernels::jumprelu::{
    launch_threshold_from_param, launch_threshold_grad, ThresholdGrad, ThresholdGradBuffers,
};
use crate::gpu::kernels::penalty::CodePenalty;
use crate::gpu::{Gpu, GpuBuffer, GpuError, GpuResult, Recorder};
use crate::sae::forward::GpuSae;
use crate::sae::params::{Activation, SaeParams};
use crate::sae::trainer::{Entries, ParamState, StepContext, StepHooks, Trainer};

use super::penalized::{self, non_negative, Penalized};
use super::settings::{ArchSettings, L0Penalty, ModelConfig, ThresholdParam};
use super::spec::{ArchResume, ArchSpec, AttachError, SparsityAxis};

/// The scale inside the tanh penalty (SAELens' `jumprelu_tanh_scale`).
pub const TANH_SCALE: f32 = 4.0;

pub struct JumpRelu;

impl ArchSpec for JumpRelu {
    fn row_candidates(&self, k: usize, d_sae: usize) -> usize {
        penalized::row_candidates(k, d_sae)
    }

    fn settings(&self) -> &'static [&'static str] {
        &[
            "l0_coefficient",
            "l0_warmup_steps",
            "l0_penalty",
            "jumprelu_bandwidth",
            "jumprelu_init_threshold",
            "jumprelu_threshold_param",
            "clip_grad_norm",
            "cap",
        ]
    }

    fn validate(&self, model: &ModelConfig) -> Result<(), String> {
        let s = &model.settings.jumprelu;
        non_negative("--l0-coefficient", s.l0_coefficient)?;
        let bandwidth = s.jumprelu_bandwidth;
        if !(bandwidth.is_finite() && bandwidth > 0.0) {
            return Err(format!(
                "--jumprelu-bandwidth must be a finite positive number, got {bandwidth}"
            ));
        }
        let theta = s.jumprelu_init_threshold;
        non_negative("--jumprelu-init-threshold", theta)?;
        if theta == 0.0 && s.jumprelu_threshold_param == ThresholdParam::Log {
            return Err(
                "--jumprelu-init-threshold 0 has no logarithm (--jumprelu-threshold-param log)"
                    .into(),
            );
        }
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
        let s = &settings.jumprelu;
        penalized::warmed_up(s.l0_coefficient, s.l0_warmup_steps, step)
    }

    fn sparsity(&self) -> SparsityAxis {
        SparsityAxis::L0
    }

    fn attach<'g>(
        &self,
        trainer: Trainer<'g>,
        model: &ModelConfig,
        resume: Option<&ArchResume>,
    ) -> Result<Trainer<'g>, AttachError> {
        let s = &model.settings.jumprelu;
        let config = JumpReluConfig {
            bandwidth: s.jumprelu_bandwidth as f32,
            penalty: s.l0_penalty,
            param: s.jumprelu_threshold_param,
            clip: penalized::clip(model),
        };
        let initial = match resume {
            None => initial_param(model),
            Some(ArchResume {
                threshold_param: Some(found),
                ..
            }) => found.clone(),
            Some(_) => {
                return Err(AttachError::Invalid(
                    "the checkpoint holds no JumpReLU thresholds".into(),
                ))
            }
        };
        Ok(attach(trainer, config, &initial)?)
    }
}

/// The trained parameter at the start: θ₀ (or log θ₀) for every latent.
fn initial_param(model: &ModelConfig) -> Vec<f32> {
    let s = &model.settings.jumprelu;
    let theta = s.jumprelu_init_threshold;
    let value = match s.jumprelu_threshold_param {
        ThresholdParam::Direct => theta,
        ThresholdParam::Log => theta.ln(),
    };
    vec![value as f32; model.d_sae]
}

/// JumpReLU's settings as the step uses them.
#[derive(Clone, Copy, Debug)]
pub struct JumpReluConfig {
    /// ε of the rectangle kernel.
    pub bandwidth: f32,
    pub penalty: L0Penalty,
    pub param: ThresholdParam,
    /// The largest global gradient norm (`None`: no clipping).
    pub clip: Option<f32>,
}

/// Makes `trainer` a JumpReLU trainer: its per-row selection (its `k`) caps the codes kept per
/// row, each latent keeping what exceeds its threshold θ; `initial` is the trained parameter
/// (θ or log θ, per latent). The loss is SAELens' mean squared error plus the L0 penalty (its
/// coefficient comes with each step); θ learns through the straight-through estimator.
pub fn attach<'g>(
    mut trainer: Trainer<'g>,
    config: JumpReluConfig,
    initial: &[f32],
) -> GpuResult<Trainer<'g>> {
    let gpu = trainer.gpu();
    let d_sae = trainer.sae.d_sae;
    let bandwidth_ok = config.bandwidth.is_finite() && config.bandwidth > 0.0;
    if initial.len() != d_sae || !bandwidth_ok {
        return Err(GpuError::Shape {
            kernel: "jumprelu",
            message: format!(
                "{} thresholds for {d_sae} latents, bandwidth {}",
                initial.len(),
                config.bandwidth
            ),
        });
    }
    let param = gpu.upload("threshold param", initial)?;
    let thresholds = gpu.storage::<f32>("thresholds", d_sae)?;
    // θ from the parameter on the GPU, as every step does (a host exp could differ in the last
    // bit, and a resumed run would not be identical to an uninterrupted one).
    let log = config.param == ThresholdParam::Log;
    let mut rec = Recorder::new(gpu, "thresholds");
    launch_threshold_from_param(&mut rec, &param, &thresholds, log)?;
    rec.submit()?;
    trainer.sae.thresholds = Some(thresholds);
    let codes = match config.penalty {
        L0Penalty::Step => None,
        L0Penalty::Tanh => Some(CodePenalty::Tanh { scale: TANH_SCALE }),
    };
    let step = Step {
        penalized: Penalized::new(&trainer, config.clip, codes)?,
        state: ParamState::new(gpu, &param)?,
        param,
        config,
    };
    Ok(trainer.with_hooks(step))
}

/// The family's step, and the trained parameter (θ or log θ) behind `sae.thresholds` with its
/// Adam state.
struct Step {
    penalized: Penalized,
    config: JumpReluConfig,
    param: GpuBuffer,
    state: ParamState,
}

impl StepHooks for Step {
    fn reconstruction_loss(
        &self,
        rec: &mut Recorder<'_>,
        step: &StepContext<'_>,
    ) -> GpuResult<LossScale> {
        self.penalized.reconstruction_loss(rec, step)
    }

    fn code_grads(
        &self,
        rec: &mut Recorder<'_>,
        step: &StepContext<'_>,
        entries: &Entries<'_>,
    ) -> GpuResult<()> {
        self.penalized.code_grads(rec, step, entries)
    }

    /// The estimator's gradient on each latent's threshold parameter.
    fn own_grads(&self, rec: &mut Recorder<'_>, step: &StepContext<'_>) -> GpuResult<()> {
        let Some(thresholds) = &step.sae.thresholds else {
            return Ok(());
        };
        let tanh = self.config.penalty == L0Penalty::Tanh;
        let args = ThresholdGrad {
            rows: step.shape.rows,
            d_out: step.shape.d_out,
            bandwidth: self.config.bandwidth,
            tanh_scale: tanh.then_some(TANH_SCALE),
            coeff: step.coeff,
            log_param: self.config.param == ThresholdParam::Log,
        };
        for (block, h) in step.sae.blocks.iter().zip(&step.fw.h) {
            let buffers = ThresholdGradBuffers {
                pre: h,
                grad_out: step.grad_out,
                w_dec: &block.w_dec,
                norms: &self.penalized.norms,
                thresholds,
                grad_param: &self.state.grad,
            };
            launch_threshold_grad(rec, buffers, block.range, args)?;
        }
        Ok(())
    }

    fn unit_norm_decoder(&self) -> bool {
        false
    }

    fn clip(&self) -> Option<f32> {
        StepHooks::clip(&self.penalized)
    }

    fn own_param(&self) -> Option<(&GpuBuffer, &ParamState)> {
        Some((&self.param, &self.state))
    }

    fn after_optimiser(&self, rec: &mut Recorder<'_>, sae: &GpuSae) -> GpuResult<()> {
        let Some(thresholds) = &sae.thresholds else {
            return Ok(());
        };
        let log = self.config.param == ThresholdParam::Log;
        launch_threshold_from_param(rec, &self.param, thresholds, log)
    }

    fn inference_activation(&self, gpu: &Gpu, sae: &GpuSae) -> GpuResult<Option<Activation>> {
        let Some(thresholds) = &sae.thresholds else {
            return Ok(None);
        };
        Ok(Some(Activation::JumpRelu {
            threshold: gpu.read(thresholds)?,
        }))
    }
}
