//! SAE weights on the GPU and the recorded forward pass (encode GEMM → TopK → sparse decode).

use crate::gpu::kernels::decoder::launch_decode_sparse;
use crate::gpu::kernels::encoder::{launch_encode_gemm, EncoderShape, GemmTiles};
use crate::gpu::kernels::topk::launch_topk;
use crate::gpu::{Gpu, GpuBuffer, GpuError, GpuResult, InputPrecision, Recorder};

use super::params::{Activation, SaeParams};

/// The four parameter tensors of an SAE, resident on the GPU.
pub struct GpuSae {
    pub d_in: usize,
    pub d_sae: usize,
    pub k: usize,
    pub w_enc: GpuBuffer,
    pub b_enc: GpuBuffer,
    pub w_dec: GpuBuffer,
    pub b_dec: GpuBuffer,
}

impl GpuSae {
    pub fn upload(gpu: &Gpu, params: &SaeParams) -> GpuResult<GpuSae> {
        let k = params.k().ok_or_else(|| GpuError::Shape {
            kernel: "forward",
            message: "only TopK SAEs run on the GPU forward path so far".into(),
        })?;
        Ok(GpuSae {
            d_in: params.d_in,
            d_sae: params.d_sae,
            k,
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
            activation: Activation::TopK { k: self.k },
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
        })
    }
}

/// Records encode → TopK → decode for the first `rows` rows of `fw.x`.
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
    launch_topk(
        rec,
        &fw.h,
        rows,
        sae.d_sae,
        sae.k,
        &fw.top_idx,
        &fw.top_val,
        None,
    )?;
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
