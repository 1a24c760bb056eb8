//! SAE weights on the GPU and the recorded forward pass (encode GEMM → TopK → sparse decode).

use crate::gpu::kernels::decoder::launch_decode_sparse;
use crate::gpu::kernels::encoder::{launch_encode_gemm, EncoderShape, GemmTiles};
use crate::gpu::kernels::topk::{launch_count_active, launch_topk_thresholded, Thresholds, MAX_K};
use crate::gpu::{Gpu, GpuBuffer, GpuError, GpuResult, InputPrecision, Recorder};

use super::params::{Activation, SaeParams};

/// Latents kept per row for ReLU and JumpReLU SAEs unless the caller says otherwise.
pub const DEFAULT_CAP: usize = 256;

/// The four parameter tensors of an SAE, resident on the GPU.
pub struct GpuSae {
    pub d_in: usize,
    pub d_sae: usize,
    /// Latents kept per row: TopK's k, or the cap for ReLU / JumpReLU SAEs.
    pub k: usize,
    /// Per-latent thresholds of ReLU (0) and JumpReLU (θ) SAEs; `None` for TopK.
    pub thresholds: Option<GpuBuffer>,
    activation: Activation,
    pub w_enc: GpuBuffer,
    pub b_enc: GpuBuffer,
    pub w_dec: GpuBuffer,
    pub b_dec: GpuBuffer,
}

impl GpuSae {
    pub fn upload(gpu: &Gpu, params: &SaeParams) -> GpuResult<GpuSae> {
        GpuSae::upload_with_cap(gpu, params, DEFAULT_CAP)
    }

    /// Uploads an SAE; ReLU and JumpReLU SAEs keep at most `cap` latents per row.
    pub fn upload_with_cap(gpu: &Gpu, params: &SaeParams, cap: usize) -> GpuResult<GpuSae> {
        let cap = cap.clamp(1, MAX_K).min(params.d_sae);
        let (k, thresholds) = match &params.activation {
            Activation::TopK { k } => (*k, None),
            Activation::Relu => (
                cap,
                Some(gpu.upload("thresholds", &vec![0.0f32; params.d_sae])?),
            ),
            Activation::JumpRelu { threshold } => (cap, Some(gpu.upload("thresholds", threshold)?)),
        };
        if k == 0 || k > MAX_K || k > params.d_sae {
            return Err(GpuError::Shape {
                kernel: "forward",
                message: format!(
                    "k = {k} must be between 1 and min({MAX_K}, d_sae = {})",
                    params.d_sae
                ),
            });
        }
        Ok(GpuSae {
            d_in: params.d_in,
            d_sae: params.d_sae,
            k,
            thresholds,
            activation: params.activation.clone(),
            w_enc: gpu.upload("W_enc", &params.w_enc)?,
            b_enc: gpu.upload("b_enc", &params.b_enc)?,
            w_dec: gpu.upload("W_dec", &params.w_dec)?,
            b_dec: gpu.upload("b_dec", &params.b_dec)?,
        })
    }

    pub fn download(&self, gpu: &Gpu) -> GpuResult<SaeParams> {
        Ok(SaeParams {
            d_in: self.d_in,
            d_sae: self.d_sae,
            activation: self.activation.clone(),
            w_enc: gpu.read(&self.w_enc)?,
            b_enc: gpu.read(&self.b_enc)?,
            w_dec: gpu.read(&self.w_dec)?,
            b_dec: gpu.read(&self.b_dec)?,
        })
    }

    /// The parameter tensors in a fixed order (W_enc, b_enc, W_dec, b_dec).
    pub fn tensors(&self) -> [&GpuBuffer; 4] {
        [&self.w_enc, &self.b_enc, &self.w_dec, &self.b_dec]
    }
}

/// Activations of one batch through the forward pass; sized for `capacity` rows.
pub struct ForwardBuffers {
    pub capacity: usize,
    pub x: GpuBuffer,
    pub h: GpuBuffer,
    pub top_idx: GpuBuffer,
    pub top_val: GpuBuffer,
    pub x_hat: GpuBuffer,
    /// [capacity] u32 non-zero latents per row, for thresholded SAEs.
    pub active: Option<GpuBuffer>,
}

impl ForwardBuffers {
    pub fn new(gpu: &Gpu, sae: &GpuSae, capacity: usize) -> GpuResult<ForwardBuffers> {
        Ok(ForwardBuffers {
            capacity,
            x: gpu.storage::<f32>("x", capacity * sae.d_in)?,
            h: gpu.storage::<f32>("pre_activations", capacity * sae.d_sae)?,
            top_idx: gpu.storage::<u32>("top_idx", capacity * sae.k)?,
            top_val: gpu.storage::<f32>("top_val", capacity * sae.k)?,
            x_hat: gpu.storage::<f32>("x_hat", capacity * sae.d_in)?,
            active: match sae.thresholds {
                Some(_) => Some(gpu.storage::<u32>("active_latents", capacity)?),
                None => None,
            },
        })
    }
}

/// Records encode → TopK (or capped threshold selection) → decode for the first `rows` rows
/// of `fw.x`.
pub fn record_forward(
    rec: &mut Recorder<'_>,
    sae: &GpuSae,
    fw: &ForwardBuffers,
    rows: usize,
) -> GpuResult<()> {
    let shape = EncoderShape {
        rows,
        d_in: sae.d_in,
        d_sae: sae.d_sae,
    };
    launch_encode_gemm(
        rec,
        &fw.x,
        InputPrecision::F32,
        &sae.w_enc,
        &sae.b_dec,
        &sae.b_enc,
        &fw.h,
        shape,
        GemmTiles::default(),
    )?;
    let thresholds = sae.thresholds.as_ref().map(Thresholds);
    launch_topk_thresholded(
        rec,
        &fw.h,
        rows,
        sae.d_sae,
        sae.k,
        &fw.top_idx,
        &fw.top_val,
        None,
        thresholds,
    )?;
    if let (Some(theta), Some(active)) = (&sae.thresholds, &fw.active) {
        launch_count_active(rec, &fw.h, rows, sae.d_sae, theta, active)?;
    }
    launch_decode_sparse(
        rec,
        &fw.top_idx,
        &fw.top_val,
        &sae.w_dec,
        &sae.b_dec,
        &fw.x_hat,
        rows,
        sae.d_in,
        sae.d_sae,
        sae.k,
    )
}
