//! Sparse decoder forward: `x̂ = b_dec + Σ_j f_j · W_dec[idx_j]`, a gather over the k latents
//! (a skip-transcoder's base is a row per output row: x·W_skipᵀ + b_dec).

use super::{check_len, dim, LatentRange};
use crate::gpu::bindings::decoder::*;
use crate::gpu::dispatch::{tiles, Grid};
use crate::gpu::error::GpuResult;
use crate::gpu::params::DecoderParams;
use crate::gpu::{GpuBuffer, PipelineKey, Recorder, Shader};

const KERNEL: &str = "decode_sparse";
const WG: u32 = 64;

/// What the decoded sum is added to.
#[derive(Clone, Copy)]
pub enum DecodeBase<'a> {
    /// b_dec [d_out], the same for every row.
    Bias(&'a GpuBuffer),
    /// [rows, d_out], one row per output row.
    Rows(&'a GpuBuffer),
}

#[allow(clippy::too_many_arguments)]
pub fn launch_decode_sparse(
    rec: &mut Recorder<'_>,
    top_idx: &GpuBuffer,
    top_val: &GpuBuffer,
    w_dec: &GpuBuffer,
    b_dec: &GpuBuffer,
    x_hat: &GpuBuffer,
    rows: usize,
    d_out: usize,
    d_sae: usize,
    k: usize,
) -> GpuResult<()> {
    launch_decode_sparse_block(
        rec,
        top_idx,
        top_val,
        w_dec,
        LatentRange::whole(d_sae),
        DecodeBase::Bias(b_dec),
        x_hat,
        rows,
        d_out,
        k,
    )
}

/// The decode restricted to the latents of one `w_dec` block ([block.len, d_out]): the block
/// starting at latent 0 writes `base + Σ`, later blocks add their part.
#[allow(clippy::too_many_arguments)]
pub fn launch_decode_sparse_block(
    rec: &mut Recorder<'_>,
    top_idx: &GpuBuffer,
    top_val: &GpuBuffer,
    w_dec: &GpuBuffer,
    block: LatentRange,
    base: DecodeBase<'_>,
    x_hat: &GpuBuffer,
    rows: usize,
    d_out: usize,
    k: usize,
) -> GpuResult<()> {
    check_len(KERNEL, top_idx, rows * k)?;
    check_len(KERNEL, top_val, rows * k)?;
    check_len(KERNEL, w_dec, block.len * d_out)?;
    let (b_dec, base_rows) = match base {
        DecodeBase::Bias(b) => (b, false),
        DecodeBase::Rows(b) => (b, true),
    };
    check_len(KERNEL, b_dec, if base_rows { rows * d_out } else { d_out })?;
    check_len(KERNEL, x_hat, rows * d_out)?;
    let col_tiles = tiles(d_out, WG);
    let params = DecoderParams {
        rows: dim(KERNEL, "rows", rows)?,
        d_out: dim(KERNEL, "d_out", d_out)?,
        k: dim(KERNEL, "k", k)?,
        col_tiles,
        latent_start: dim(KERNEL, "first latent", block.start)?,
        block_len: dim(KERNEL, "block latents", block.len)?,
        accumulate: u32::from(block.start > 0),
        base_rows: u32::from(base_rows),
    };
    let key = PipelineKey::new(Shader::Decoder, "decode_sparse").define("WG", WG);
    let grid = Grid::linear(
        rows as u64 * u64::from(col_tiles),
        rec.gpu().limits.max_compute_workgroups_per_dimension,
    );
    rec.launch(
        &key,
        &params,
        &[
            (TOP_IDX, top_idx),
            (TOP_VAL, top_val),
            (W_DEC, w_dec),
            (B_DEC, b_dec),
            (X_HAT, x_hat),
        ],
        grid,
    )
}
