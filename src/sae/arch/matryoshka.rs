//! Matryoshka (Bussmann et al. 2025): BatchTopK whose nested prefixes of the dictionary each
//! reconstruct the input too; the loss is SAELens' unweighted sum over the prefixes of each
//! prefix's squared error over the batch's Σ‖x − x̄‖² (FVU for the full width). Exported as
//! SAELens `jumprelu` with θ. The dictionary must fit one storage binding.

use crate::gpu::kernels::backward::{
    launch_code_grad_block, launch_decoder_weight_grad_block, launch_loss_grad,
    launch_loss_grad_into, LossScale,
};
use crate::gpu::kernels::decoder::launch_decode_sparse_block;
use crate::gpu::kernels::LatentRange;
use crate::gpu::{Gpu, GpuBuffer, GpuError, GpuResult, Recorder};
use crate::sae::forward::GpuSae;
use crate::sae::params::Activation;
use crate::sae::trainer::{slot, Entries, StepContext, StepHooks, Trainer};

use super::batch_selection::{self, BatchSelection};
use super::settings::ModelConfig;
use super::spec::{ArchResume, ArchSpec, AttachError};

pub struct Matryoshka;

impl ArchSpec for Matryoshka {
    fn row_candidates(&self, k: usize, d_sae: usize) -> usize {
        batch_selection::row_candidates(k, d_sae)
    }

    fn settings(&self) -> &'static [&'static str] {
        &["matryoshka_widths"]
    }

    fn validate(&self, model: &ModelConfig) -> Result<(), String> {
        widths(&model.settings.matryoshka.matryoshka_widths, model.d_sae).map(|_| ())
    }

    fn attach<'g>(
        &self,
        trainer: Trainer<'g>,
        model: &ModelConfig,
        resume: Option<&ArchResume>,
    ) -> Result<Trainer<'g>, AttachError> {
        let widths = widths(&model.settings.matryoshka.matryoshka_widths, model.d_sae)
            .map_err(AttachError::Invalid)?;
        // The full width is the main reconstruction; the step adds the smaller prefixes.
        let prefixes = match widths.split_last() {
            Some((&last, smaller)) if last == model.d_sae => smaller,
            _ => widths.as_slice(),
        };
        let theta = resume.and_then(|r| r.theta).unwrap_or(0.0);
        Ok(attach(trainer, model.k, theta, prefixes)?)
    }
}

/// Matryoshka's prefix widths when none are given: the groups [d/16, d/16, d/8, d/4, d/2] of
/// the reference runs (REFERENCE.md), as nested widths d/16, d/8, d/4, d/2 and d.
pub fn default_widths(d_sae: usize) -> Vec<usize> {
    let mut widths: Vec<usize> = [16, 8, 4, 2, 1]
        .iter()
        .map(|f| d_sae / f)
        .filter(|&w| w > 0)
        .collect();
    widths.dedup();
    widths
}

/// The prefix widths of `--matryoshka-widths` checked (strictly increasing, at most d_sae)
/// with the full width appended when missing.
pub fn widths(given: &[usize], d_sae: usize) -> Result<Vec<usize>, String> {
    if given.is_empty() {
        return Ok(default_widths(d_sae));
    }
    if given.contains(&0) || given.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "--matryoshka-widths {given:?}: widths must be positive and strictly increasing"
        ));
    }
    if let Some(&last) = given.last() {
        if last > d_sae {
            return Err(format!(
                "--matryoshka-widths {given:?}: {last} exceeds the dictionary size d_sae = {d_sae}"
            ));
        }
    }
    let mut widths = given.to_vec();
    if widths.last() != Some(&d_sae) {
        widths.push(d_sae);
    }
    Ok(widths)
}

/// Makes `trainer` a Matryoshka trainer: BatchTopK's selection (k per row on average, θ from
/// `theta`), and besides the whole dictionary each prefix of `prefixes` latents (increasing,
/// below d_sae) reconstructs the input, its loss added to the gradients.
pub fn attach<'g>(
    trainer: Trainer<'g>,
    k: usize,
    theta: f32,
    prefixes: &[usize],
) -> GpuResult<Trainer<'g>> {
    let selection = BatchSelection::new(&trainer, k, theta)?;
    let prefixes = Prefixes::new(&trainer, prefixes)?;
    Ok(trainer.with_hooks(Step {
        selection,
        prefixes,
    }))
}

/// Nested prefixes of the dictionary, each of which reconstructs the input too.
struct Prefixes {
    /// Widths below d_sae, increasing (the full width is the main reconstruction).
    widths: Vec<usize>,
    /// One prefix's reconstruction and the gradient of its loss, [rows, d_out].
    x_hat: GpuBuffer,
    grad: GpuBuffer,
}

impl Prefixes {
    fn new(trainer: &Trainer<'_>, widths: &[usize]) -> GpuResult<Prefixes> {
        let (sae, gpu) = (&trainer.sae, trainer.gpu());
        let d_sae = sae.d_sae;
        let increasing = widths.windows(2).all(|w| w[0] < w[1]);
        if !increasing || widths.iter().any(|&w| w == 0 || w >= d_sae) {
            return Err(GpuError::Shape {
                kernel: "matryoshka",
                message: format!(
                    "prefix widths {widths:?} must increase and lie below d_sae = {d_sae}"
                ),
            });
        }
        if sae.blocks.len() > 1 {
            return Err(GpuError::Shape {
                kernel: "matryoshka",
                message: format!(
                    "a dictionary of {d_sae} latents split into {} blocks; Matryoshka training needs it in one storage binding",
                    sae.blocks.len()
                ),
            });
        }
        let n = trainer.batch_rows * sae.d_out;
        Ok(Prefixes {
            widths: widths.to_vec(),
            x_hat: gpu.storage::<f32>("prefix x_hat", n)?,
            grad: gpu.storage::<f32>("prefix grad", n)?,
        })
    }

    /// Each prefix's reconstruction and loss gradient, added to its latents' codes and
    /// decoder rows and to `entries.grad_out` (so b_dec sees every loss).
    fn record(
        &self,
        rec: &mut Recorder<'_>,
        step: &StepContext<'_>,
        entries: &Entries<'_>,
    ) -> GpuResult<()> {
        let (Some(block), Some(st)) = (step.sae.blocks.first(), step.blocks.first()) else {
            return Ok(());
        };
        let (s, shape) = (step.shape, entries.index.shape);
        let (x, stats) = (step.fw.target(), step.stats);
        let fvu = LossScale::fvu(slot::VARIANCE);
        for &width in &self.widths {
            // The prefix is the first `width` latents of the one block: its rows start the
            // block's buffers, so the kernels take it as a block of its own.
            let prefix = LatentRange {
                start: 0,
                len: width,
            };
            let (idx, val) = (entries.top_idx, entries.top_val);
            rec.stage("matryoshka");
            launch_decode_sparse_block(
                rec,
                idx,
                val,
                &block.w_dec,
                prefix,
                step.fw.decode_base(step.sae),
                &self.x_hat,
                s.rows,
                s.d_out,
                shape.k,
            )?;
            launch_loss_grad(rec, &self.x_hat, x, stats, fvu, &self.grad, s)?;
            let code_grad = entries.code_grad;
            let w_dec = &block.w_dec;
            launch_code_grad_block(
                rec, &self.grad, idx, val, w_dec, prefix, code_grad, shape, true,
            )?;
            let (index, grad_w_dec) = (entries.index, &st.w_dec.grad);
            launch_decoder_weight_grad_block(
                rec, index, val, &self.grad, grad_w_dec, prefix, true,
            )?;
            let grad_out = entries.grad_out;
            launch_loss_grad_into(rec, &self.x_hat, x, stats, fvu, grad_out, s, true)?;
        }
        rec.stage("backward");
        Ok(())
    }
}

struct Step {
    selection: BatchSelection,
    prefixes: Prefixes,
}

impl StepHooks for Step {
    fn select(&self, rec: &mut Recorder<'_>, step: &StepContext<'_>) -> GpuResult<()> {
        self.selection.record(rec, step)
    }

    fn code_grads(
        &self,
        rec: &mut Recorder<'_>,
        step: &StepContext<'_>,
        entries: &Entries<'_>,
    ) -> GpuResult<()> {
        self.prefixes.record(rec, step, entries)
    }

    fn theta(&self, gpu: &Gpu) -> GpuResult<Option<f32>> {
        self.selection.theta(gpu).map(Some)
    }

    fn inference_activation(&self, gpu: &Gpu, sae: &GpuSae) -> GpuResult<Option<Activation>> {
        self.selection
            .inference_activation(gpu, sae.d_sae)
            .map(Some)
    }
}
