//! Adam with bias correction, and the unit-norm decoder constraint.

use super::{check_len, dim};
use crate::gpu::bindings::optim::*;
use crate::gpu::dispatch::Grid;
use crate::gpu::error::{ensure, GpuResult};
use crate::gpu::params::OptimParams;
use crate::gpu::{GpuBuffer, PipelineKey, Recorder, Shader};

const WG: u32 = 256;

/// Rows of at most this many columns take the one-invocation-per-row entries.
pub const NARROW_ROW: usize = 256;

/// The entry and grid for `rows` rows of `cols`: a workgroup per row, or one invocation per
/// row when rows are narrow.
fn row_launch(
    rec: &Recorder<'_>,
    entry: &'static str,
    narrow: &'static str,
    rows: usize,
    cols: usize,
) -> (PipelineKey, Grid) {
    if cols <= NARROW_ROW {
        (key(narrow), rec.threads_grid(rows, WG))
    } else {
        let limit = rec.gpu().limits.max_compute_workgroups_per_dimension;
        (key(entry), Grid::linear(rows as u64, limit))
    }
}

/// Added to decoder row norms before dividing; f32 machine epsilon, as sparsify does.
pub const NORM_EPS: f32 = f32::EPSILON;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
}

impl Default for AdamConfig {
    /// torch.optim.Adam's defaults.
    fn default() -> Self {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

fn key(entry: &'static str) -> PipelineKey {
    PipelineKey::new(Shader::Optim, entry).define("WG", WG)
}

/// One Adam step (`step` counts from 1) on a whole parameter tensor.
#[allow(clippy::too_many_arguments)]
pub fn launch_adam(
    rec: &mut Recorder<'_>,
    param: &GpuBuffer,
    grad: &GpuBuffer,
    exp_avg: &GpuBuffer,
    exp_avg_sq: &GpuBuffer,
    config: &AdamConfig,
    lr: f64,
    step: u64,
) -> GpuResult<()> {
    const KERNEL: &str = "adam_step";
    ensure(step >= 1, KERNEL, || "Adam steps count from 1".to_string())?;
    let n = param.len;
    check_len(KERNEL, grad, n)?;
    check_len(KERNEL, exp_avg, n)?;
    check_len(KERNEL, exp_avg_sq, n)?;
    let t = step as f64;
    let bias1 = 1.0 - config.beta1.powf(t);
    let bias2 = 1.0 - config.beta2.powf(t);
    let params = OptimParams {
        n: dim(KERNEL, "parameters", n)?,
        beta1: config.beta1 as f32,
        beta2: config.beta2 as f32,
        eps: config.eps as f32,
        step_size: (lr / bias1) as f32,
        bias2_sqrt: bias2.sqrt() as f32,
        one_minus_beta1: (1.0 - config.beta1) as f32,
        one_minus_beta2: (1.0 - config.beta2) as f32,
        ..Default::default()
    };
    let grid = rec.threads_grid(n, WG);
    rec.launch(
        &key(KERNEL),
        &params,
        &[
            (PARAM, param),
            (GRAD, grad),
            (EXP_AVG, exp_avg),
            (EXP_AVG_SQ, exp_avg_sq),
        ],
        grid,
    )
}

fn row_params(kernel: &'static str, rows: usize, cols: usize) -> GpuResult<OptimParams> {
    Ok(OptimParams {
        rows: dim(kernel, "rows", rows)?,
        cols: dim(kernel, "cols", cols)?,
        norm_eps: NORM_EPS,
        ..Default::default()
    })
}

/// Removes from each decoder row's gradient its component along the row.
pub fn launch_remove_parallel_grad(
    rec: &mut Recorder<'_>,
    w_dec: &GpuBuffer,
    grad_w_dec: &GpuBuffer,
    rows: usize,
    cols: usize,
) -> GpuResult<()> {
    const KERNEL: &str = "remove_parallel_grad";
    check_len(KERNEL, w_dec, rows * cols)?;
    check_len(KERNEL, grad_w_dec, rows * cols)?;
    let params = row_params(KERNEL, rows, cols)?;
    let (key, grid) = row_launch(rec, KERNEL, "remove_parallel_grad_narrow", rows, cols);
    rec.launch(&key, &params, &[(PARAM, w_dec), (GRAD, grad_w_dec)], grid)
}

/// Scales each decoder row to unit norm: `w ← w / (‖w‖ + ε)`.
pub fn launch_normalize_rows(
    rec: &mut Recorder<'_>,
    w_dec: &GpuBuffer,
    rows: usize,
    cols: usize,
) -> GpuResult<()> {
    const KERNEL: &str = "normalize_rows";
    check_len(KERNEL, w_dec, rows * cols)?;
    let params = row_params(KERNEL, rows, cols)?;
    let (key, grid) = row_launch(rec, KERNEL, "normalize_rows_narrow", rows, cols);
    rec.launch(&key, &params, &[(PARAM, w_dec)], grid)
}
