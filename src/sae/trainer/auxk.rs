//! AuxK (Gao et al. 2024): the dead latents' top pre-activations reconstruct the main
//! reconstruction's residual, which revives them. The TopK family trains with it
//! (`ArchSpec::uses_auxk`); its buffers live here, its launches in the step.

use crate::gpu::kernels::backward::{BackwardShape, ReverseIndex};
use crate::gpu::kernels::topk::MAX_K;
use crate::gpu::{Gpu, GpuBuffer, GpuResult};
use crate::sae::forward::{Candidates, GpuSae};

/// AuxK settings: `alpha` weights the auxiliary loss; `k_aux` dead latents decode each row.
#[derive(Clone, Copy, Debug)]
pub struct AuxKConfig {
    pub alpha: f32,
    pub k_aux: usize,
}

/// Buffers of the AuxK pass.
pub(super) struct AuxK {
    pub config: AuxKConfig,
    pub aux_idx: GpuBuffer,
    pub aux_val: GpuBuffer,
    pub e_hat: GpuBuffer,
    pub aux_diff: GpuBuffer,
    pub zeros_rows: GpuBuffer,
    pub zeros_d_out: GpuBuffer,
    pub grad_aux: GpuBuffer,
    pub aux_code_grad: GpuBuffer,
    pub index: ReverseIndex,
    pub candidates: Option<Candidates>,
}

impl AuxK {
    /// AuxK's buffers for batches of `rows` rows, or `None` when `config` turns it off.
    pub fn new(
        gpu: &Gpu,
        sae: &GpuSae,
        shape: BackwardShape,
        config: Option<AuxKConfig>,
    ) -> GpuResult<Option<AuxK>> {
        let Some(config) = config.filter(|c| c.alpha > 0.0) else {
            return Ok(None);
        };
        let rows = shape.rows;
        let k_aux = config.k_aux.clamp(1, MAX_K.min(sae.d_sae));
        let aux_shape = BackwardShape { k: k_aux, ..shape };
        let n = rows * sae.d_out;
        Ok(Some(AuxK {
            config: AuxKConfig { k_aux, ..config },
            aux_idx: gpu.storage::<u32>("aux_idx", rows * k_aux)?,
            aux_val: gpu.storage::<f32>("aux_val", rows * k_aux)?,
            e_hat: gpu.storage::<f32>("aux_e_hat", n)?,
            aux_diff: gpu.storage::<f32>("aux_diff", n)?,
            zeros_rows: gpu.storage::<f32>("zeros", n)?,
            zeros_d_out: gpu.storage::<f32>("zeros_d_out", sae.d_out)?,
            grad_aux: gpu.storage::<f32>("grad_aux", n)?,
            aux_code_grad: gpu.storage::<f32>("aux_code_grad", rows * k_aux)?,
            index: ReverseIndex::new(gpu, aux_shape)?,
            candidates: Candidates::new(gpu, &sae.layout, rows, k_aux)?,
        }))
    }
}
