//! JumpReLU's trained thresholds (shaders/jumprelu.wgsl): the straight-through estimator's
//! gradient on each latent's threshold, and θ from the trained parameter after the optimiser.

use super::{check_len, dim, LatentRange};
use crate::gpu::bindings::jumprelu::*;
use crate::gpu::dispatch::Grid;
use crate::gpu::error::GpuResult;
use crate::gpu::params::JumpReluParams;
use crate::gpu::{GpuBuffer, PipelineKey, Recorder, Shader};

const WG: u32 = 256;

fn key(entry: &'static str) -> PipelineKey {
    PipelineKey::new(Shader::JumpRelu, entry).define("WG", WG)
}

/// What the threshold gradient needs besides the buffers.
#[derive(Clone, Copy, Debug)]
pub struct ThresholdGrad {
    pub rows: usize,
    /// The decoder rows' width (d_out; d_in for an SAE).
    pub d_out: usize,
    pub bandwidth: f32,
    /// The L0 penalty: `None` the step penalty λ·mean_b Σᵢ H(hᵢ − θᵢ) (DeepMind), which only
    /// the thresholds see; `Some(s)` the tanh penalty λ·mean_b Σᵢ tanh(s·fᵢ·nᵢ) (Anthropic).
    pub tanh_scale: Option<f32>,
    /// λ / rows this step.
    pub coeff: f32,
    /// The trained parameter is log θ (DeepMind) rather than θ itself (SAELens).
    pub log_param: bool,
}

/// The buffers of [`launch_threshold_grad`]: the block's pre-activations [rows, block.len] and
/// decoder rows, ∂L/∂x̂ [rows, d_out], and the per-latent θ, decoder norms and gradient.
pub struct ThresholdGradBuffers<'a> {
    pub pre: &'a GpuBuffer,
    pub grad_out: &'a GpuBuffer,
    pub w_dec: &'a GpuBuffer,
    pub norms: &'a GpuBuffer,
    pub thresholds: &'a GpuBuffer,
    pub grad_param: &'a GpuBuffer,
}

/// `grad_param[i]` for the block's latents: the estimator's gradient of the loss on θᵢ (times
/// θᵢ when the parameter is log θ), summed over the rows inside the kernel's window.
pub fn launch_threshold_grad(
    rec: &mut Recorder<'_>,
    b: ThresholdGradBuffers<'_>,
    block: LatentRange,
    args: ThresholdGrad,
) -> GpuResult<()> {
    const KERNEL: &str = "threshold_grad";
    check_len(KERNEL, b.pre, args.rows * block.len)?;
    check_len(KERNEL, b.grad_out, args.rows * args.d_out)?;
    check_len(KERNEL, b.w_dec, block.len * args.d_out)?;
    for per_latent in [b.norms, b.thresholds, b.grad_param] {
        check_len(KERNEL, per_latent, block.end())?;
    }
    let params = JumpReluParams {
        rows: dim(KERNEL, "rows", args.rows)?,
        d_in: dim(KERNEL, "d_out", args.d_out)?,
        latent_start: dim(KERNEL, "first latent", block.start)?,
        block_len: dim(KERNEL, "block latents", block.len)?,
        bandwidth: args.bandwidth,
        coeff: args.coeff,
        tanh_scale: args.tanh_scale.unwrap_or(0.0),
        log_param: u32::from(args.log_param),
        ..JumpReluParams::default()
    };
    let grid = Grid::linear(
        block.len as u64,
        rec.gpu().limits.max_compute_workgroups_per_dimension,
    );
    rec.launch(
        &key(KERNEL),
        &params,
        &[
            (PRE, b.pre),
            (GRAD_OUT, b.grad_out),
            (W_DEC, b.w_dec),
            (NORMS, b.norms),
            (THRESHOLDS, b.thresholds),
            (GRAD_PARAM, b.grad_param),
        ],
        grid,
    )
}

/// `thresholds = exp(param)` for log θ; for θ itself, `param = thresholds = max(param, 0)`.
pub fn launch_threshold_from_param(
    rec: &mut Recorder<'_>,
    param: &GpuBuffer,
    thresholds: &GpuBuffer,
    log_param: bool,
) -> GpuResult<()> {
    const KERNEL: &str = "threshold_from_param";
    let n = param.len;
    check_len(KERNEL, thresholds, n)?;
    let params = JumpReluParams {
        n: dim(KERNEL, "latents", n)?,
        log_param: u32::from(log_param),
        ..JumpReluParams::default()
    };
    let grid = rec.threads_grid(n, WG);
    rec.launch(
        &key(KERNEL),
        &params,
        &[(THRESHOLDS, thresholds), (PARAM, param)],
        grid,
    )
}
