//! SAELens' run-time input normalisation: each row normalised in place before the encoder,
//! each reconstruction denormalised with the same row's statistics after the decoder.

use super::{check_len, dim};
use crate::gpu::bindings::input_norm::*;
use crate::gpu::dispatch::Grid;
use crate::gpu::error::GpuResult;
use crate::gpu::params::InputNormParams;
use crate::gpu::{GpuBuffer, PipelineKey, Recorder, Shader};

const WG: u32 = 64;

/// Which per-row normalisation (SAELens' `normalize_activations` values that act per row).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowNorm {
    /// x ← x·√d/‖x‖.
    ConstantNormRescale,
    /// x ← (x − μ)/(σ + 10⁻⁵), σ unbiased.
    LayerNorm,
}

fn params(
    kernel: &'static str,
    norm: RowNorm,
    rows: usize,
    d_in: usize,
) -> GpuResult<InputNormParams> {
    Ok(InputNormParams {
        rows: dim(kernel, "rows", rows)?,
        d_in: dim(kernel, "d_in", d_in)?,
        mode: match norm {
            RowNorm::ConstantNormRescale => 1,
            RowNorm::LayerNorm => 2,
        },
        _pad: 0,
    })
}

/// Normalises the first `rows` rows of `x` ([rows, d_in]) in place and writes each row's
/// statistics to `row_stats` ([rows, 2]).
pub fn launch_normalize_rows(
    rec: &mut Recorder<'_>,
    norm: RowNorm,
    x: &GpuBuffer,
    row_stats: &GpuBuffer,
    rows: usize,
    d_in: usize,
) -> GpuResult<()> {
    const KERNEL: &str = "normalize_rows";
    check_len(KERNEL, x, rows * d_in)?;
    check_len(KERNEL, row_stats, rows * 2)?;
    let key = PipelineKey::new(Shader::InputNorm, KERNEL).define("WG", WG);
    let grid = Grid::linear(
        rows as u64,
        rec.gpu().limits.max_compute_workgroups_per_dimension,
    );
    rec.launch(
        &key,
        &params(KERNEL, norm, rows, d_in)?,
        &[(X, x), (ROW_STATS, row_stats)],
        grid,
    )
}

/// Undoes [`launch_normalize_rows`] on reconstructions `x_hat` ([rows, d_in]) in place.
pub fn launch_denormalize_rows(
    rec: &mut Recorder<'_>,
    norm: RowNorm,
    x_hat: &GpuBuffer,
    row_stats: &GpuBuffer,
    rows: usize,
    d_in: usize,
) -> GpuResult<()> {
    const KERNEL: &str = "denormalize_rows";
    check_len(KERNEL, x_hat, rows * d_in)?;
    check_len(KERNEL, row_stats, rows * 2)?;
    let key = PipelineKey::new(Shader::InputNorm, KERNEL).define("WG", WG);
    let grid = rec.threads_grid(rows * d_in, WG);
    rec.launch(
        &key,
        &params(KERNEL, norm, rows, d_in)?,
        &[(X, x_hat), (ROW_STATS, row_stats)],
        grid,
    )
}
