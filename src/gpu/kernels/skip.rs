//! A skip-transcoder's weight gradient ∂L/∂W_skipᵀ = xᵀ·g (shaders/skip.wgsl). Its forward
//! product x·W_skipᵀ + b_dec is the encoder GEMM's (super::encoder) with W_skipᵀ as W_enc.

use super::{check_len, dim};
use crate::gpu::bindings::skip::*;
use crate::gpu::dispatch::{tiles, Grid};
use crate::gpu::error::GpuResult;
use crate::gpu::params::SkipParams;
use crate::gpu::{GpuBuffer, PipelineKey, Recorder, Shader};

const KERNEL: &str = "skip_weight_grad";
/// The output tile's edge (TILE × TILE invocations per workgroup).
const TILE: u32 = 16;

/// `grad_skip_t[i, j] = Σ_r x[r, i] · g[r, j]` for x [rows, d_in] and g [rows, d_out]; with
/// `accumulate`, added to what `grad_skip_t` [d_in, d_out] holds.
#[allow(clippy::too_many_arguments)]
pub fn launch_skip_weight_grad(
    rec: &mut Recorder<'_>,
    x: &GpuBuffer,
    g: &GpuBuffer,
    grad_skip_t: &GpuBuffer,
    rows: usize,
    d_in: usize,
    d_out: usize,
    accumulate: bool,
) -> GpuResult<()> {
    check_len(KERNEL, x, rows * d_in)?;
    check_len(KERNEL, g, rows * d_out)?;
    check_len(KERNEL, grad_skip_t, d_in * d_out)?;
    let params = SkipParams {
        rows: dim(KERNEL, "rows", rows)?,
        d_in: dim(KERNEL, "d_in", d_in)?,
        d_out: dim(KERNEL, "d_out", d_out)?,
        accumulate: u32::from(accumulate),
    };
    // WG sizes the shared prelude's scratch array (unused here).
    let key = PipelineKey::new(Shader::Skip, KERNEL)
        .define("TILE", TILE)
        .define("WG", TILE * TILE);
    let grid = Grid::new(tiles(d_out, TILE), tiles(d_in, TILE), 1);
    rec.launch(
        &key,
        &params,
        &[(X, x), (G, g), (GRAD_SKIP_T, grad_skip_t)],
        grid,
    )
}
