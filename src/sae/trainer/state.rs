//! The optimiser's state: a gradient and Adam's two moments per trained tensor, and the
//! `stats` slots the step's reductions write into.

use crate::gpu::{Gpu, GpuBuffer, GpuResult};

use crate::sae::blocks::LatentTensor;

/// Slots of the small `stats` buffer the step's reductions write into.
pub mod slot {
    /// Σ‖x − x̄‖² of the batch (FVU's denominator).
    pub const VARIANCE: usize = 0;
    /// Σ‖x − x̂‖².
    pub const SSE: usize = 1;
    /// Σ‖ê − e‖² of AuxK.
    pub const AUX_SSE: usize = 2;
    /// min(n_dead / k_aux, 1).
    pub const AUX_SCALE: usize = 3;
    /// Always 1: the denominator of losses that are plain means (ReLU + L1's MSE).
    pub const UNIT: usize = 4;
    /// The factor that clips the gradient's global norm.
    pub const CLIP: usize = 5;
    /// Σ g² of each gradient tensor, in the trainer's parameter order, from here on.
    pub const GRAD_SQ: usize = 6;
    /// The slots the step figures are read from.
    pub const COUNT: usize = 4;
}

/// A trained tensor's gradient and Adam moments.
pub struct ParamState {
    pub grad: GpuBuffer,
    pub exp_avg: GpuBuffer,
    pub exp_avg_sq: GpuBuffer,
}

impl ParamState {
    pub fn new(gpu: &Gpu, param: &GpuBuffer) -> GpuResult<Self> {
        let n = param.len;
        Ok(ParamState {
            grad: gpu.storage::<f32>(&format!("grad {}", param.label), n)?,
            exp_avg: gpu.storage::<f32>(&format!("exp_avg {}", param.label), n)?,
            exp_avg_sq: gpu.storage::<f32>(&format!("exp_avg_sq {}", param.label), n)?,
        })
    }
}

/// Optimiser state of one block of latents.
pub struct BlockState {
    pub w_enc: ParamState,
    pub b_enc: ParamState,
    pub w_dec: ParamState,
}

pub(super) type PickState = fn(&BlockState) -> &ParamState;

/// The per-latent tensors' states within a block, in checkpoint order (W_enc, b_enc, W_dec).
pub(super) const PER_BLOCK: [(LatentTensor, PickState); 3] = [
    (LatentTensor::Encoder, |b| &b.w_enc),
    (LatentTensor::Vector, |b| &b.b_enc),
    (LatentTensor::Decoder, |b| &b.w_dec),
];
