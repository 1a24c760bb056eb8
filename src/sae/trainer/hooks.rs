//! What an architecture adds to the one training step. The step (super::step) is TopK's:
//! encode, select, decode, FVU, the backward pass through the kept entries, Adam and the
//! unit-norm decoder. An architecture (src/sae/arch) changes it only through these hooks, each
//! of which defaults to TopK's behaviour, so the step itself has no architecture branches.

use crate::gpu::kernels::backward::{BackwardShape, LossScale, ReverseIndex};
use crate::gpu::{Gpu, GpuBuffer, GpuResult, Recorder};
use crate::sae::forward::{ForwardBuffers, GpuSae};
use crate::sae::params::Activation;

use super::state::{slot, BlockState, ParamState};

/// What a hook sees of the step it is recorded into.
pub struct StepContext<'a> {
    pub sae: &'a GpuSae,
    pub fw: &'a ForwardBuffers,
    pub shape: BackwardShape,
    /// The step's reductions ([`slot`]).
    pub stats: &'a GpuBuffer,
    /// ∂L/∂x̂ of the reconstruction loss, [rows, d_out].
    pub grad_out: &'a GpuBuffer,
    /// Gradients and moments of each block of latents, in the order of `sae.blocks`.
    pub blocks: &'a [BlockState],
    /// This step's sparsity coefficient λ divided by the rows (the penalty's weight per row).
    pub coeff: f32,
}

/// The kept entries of one selection and the buffers their backward pass uses.
pub struct Entries<'a> {
    pub top_idx: &'a GpuBuffer,
    pub top_val: &'a GpuBuffer,
    pub grad_out: &'a GpuBuffer,
    pub code_grad: &'a GpuBuffer,
    pub index: &'a ReverseIndex,
}

/// An architecture's additions to the step, its own trained state, and how the trained SAE is
/// used afterwards.
pub trait StepHooks {
    /// After each row's selection: a selection of its own on top (BatchTopK's over the batch).
    fn select(&self, _rec: &mut Recorder<'_>, _step: &StepContext<'_>) -> GpuResult<()> {
        Ok(())
    }

    /// The reconstruction loss's gradient scale (FVU's by default), after any work it needs.
    fn reconstruction_loss(
        &self,
        _rec: &mut Recorder<'_>,
        _step: &StepContext<'_>,
    ) -> GpuResult<LossScale> {
        Ok(LossScale::fvu(slot::VARIANCE))
    }

    /// More gradient on the main selection's codes and decoder rows, recorded before the
    /// encoder's gradient is formed from the codes' (penalties, Matryoshka's prefixes).
    fn code_grads(
        &self,
        _rec: &mut Recorder<'_>,
        _step: &StepContext<'_>,
        _entries: &Entries<'_>,
    ) -> GpuResult<()> {
        Ok(())
    }

    /// The gradient of the architecture's own trained parameter ([`StepHooks::own_param`]).
    fn own_grads(&self, _rec: &mut Recorder<'_>, _step: &StepContext<'_>) -> GpuResult<()> {
        Ok(())
    }

    /// Whether decoder rows are kept at unit norm around Adam (the TopK family).
    fn unit_norm_decoder(&self) -> bool {
        true
    }

    /// The largest global gradient norm, when the gradient is clipped.
    fn clip(&self) -> Option<f32> {
        None
    }

    /// A trained parameter of the architecture's own and its optimiser state (JumpReLU's
    /// thresholds); Adam steps it after the SAE's tensors, checkpoints keep it.
    fn own_param(&self) -> Option<(&GpuBuffer, &ParamState)> {
        None
    }

    /// After the optimiser step (JumpReLU: θ from its trained parameter).
    fn after_optimiser(&self, _rec: &mut Recorder<'_>, _sae: &GpuSae) -> GpuResult<()> {
        Ok(())
    }

    /// BatchTopK's inference threshold θ (waits for the GPU).
    fn theta(&self, _gpu: &Gpu) -> GpuResult<Option<f32>> {
        Ok(None)
    }

    /// The activation the trained SAE is used and exported with (waits for the GPU); `None`:
    /// the one it trains with.
    fn inference_activation(&self, _gpu: &Gpu, _sae: &GpuSae) -> GpuResult<Option<Activation>> {
        Ok(None)
    }
}

/// TopK's step: no additions.
pub struct TopKStep;

impl StepHooks for TopKStep {}
