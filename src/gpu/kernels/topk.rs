//! Per-row TopK of ReLU(h) by radix select, with deterministic ties (lower index wins).

use super::{check_len, dim};
use crate::gpu::dispatch::Grid;
use crate::gpu::error::{ensure, GpuResult};
use crate::gpu::params::TopKParams;
use crate::gpu::{GpuBuffer, PipelineKey, Recorder, Shader};

const KERNEL: &str = "topk_rows";

/// The largest k the kernel sorts in workgroup memory (a power of two).
pub const MAX_K: usize = 512;

/// Per-latent thresholds for ReLU/JumpReLU SAEs: values ≤ θ_i count as zero.
pub struct Thresholds<'a>(pub &'a GpuBuffer);

fn params(
    rows: usize,
    cols: usize,
    k: usize,
    masked: bool,
    thresholded: bool,
) -> GpuResult<TopKParams> {
    Ok(TopKParams {
        rows: dim(KERNEL, "rows", rows)?,
        cols: dim(KERNEL, "cols", cols)?,
        k: k as u32,
        sort_n: k.next_power_of_two() as u32,
        masked: u32::from(masked),
        thresholded: u32::from(thresholded),
        _pad: [0; 2],
    })
}

fn key(entry: &'static str) -> PipelineKey {
    PipelineKey::new(Shader::TopK, entry).define("MAX_K", MAX_K as u32)
}

/// Records the TopK of each of `rows` rows of `h` (`cols` wide) into `top_idx`/`top_val`
/// ([rows, k], sorted by value descending, then index ascending). With `eligible`
/// ([cols] u32), only latents whose word is non-zero compete; if fewer than k are eligible,
/// the remaining slots hold value 0 (they contribute nothing downstream). With
/// `thresholds`, values are h·1{h > θ_i} instead of ReLU(h).
#[allow(clippy::too_many_arguments)]
pub fn launch_topk(
    rec: &mut Recorder<'_>,
    h: &GpuBuffer,
    rows: usize,
    cols: usize,
    k: usize,
    top_idx: &GpuBuffer,
    top_val: &GpuBuffer,
    eligible: Option<&GpuBuffer>,
) -> GpuResult<()> {
    launch_topk_thresholded(rec, h, rows, cols, k, top_idx, top_val, eligible, None)
}

#[allow(clippy::too_many_arguments)]
pub fn launch_topk_thresholded(
    rec: &mut Recorder<'_>,
    h: &GpuBuffer,
    rows: usize,
    cols: usize,
    k: usize,
    top_idx: &GpuBuffer,
    top_val: &GpuBuffer,
    eligible: Option<&GpuBuffer>,
    thresholds: Option<Thresholds<'_>>,
) -> GpuResult<()> {
    ensure((1..=MAX_K).contains(&k), KERNEL, || {
        format!("k = {k} must be between 1 and {MAX_K}")
    })?;
    ensure(k <= cols, KERNEL, || {
        format!("k = {k} exceeds the {cols} latents")
    })?;
    check_len(KERNEL, h, rows * cols)?;
    check_len(KERNEL, top_idx, rows * k)?;
    check_len(KERNEL, top_val, rows * k)?;
    if let Some(mask) = eligible {
        check_len(KERNEL, mask, cols)?;
    }
    if let Some(Thresholds(theta)) = &thresholds {
        check_len(KERNEL, theta, cols)?;
    }
    let params = params(rows, cols, k, eligible.is_some(), thresholds.is_some())?;
    // Unused optional inputs bind h in their slot; the shader never reads them then.
    let mask = eligible.unwrap_or(h);
    let theta = thresholds.map_or(h, |t| t.0);
    let grid = Grid::linear(
        rows as u64,
        rec.gpu().limits.max_compute_workgroups_per_dimension,
    );
    rec.launch(
        &key("topk_rows"),
        &params,
        &[(1, h), (2, top_idx), (3, top_val), (4, mask), (5, theta)],
        grid,
    )
}

/// `active_count[r]` = how many latents of row r are non-zero (h > θ_i).
pub fn launch_count_active(
    rec: &mut Recorder<'_>,
    h: &GpuBuffer,
    rows: usize,
    cols: usize,
    thresholds: &GpuBuffer,
    active_count: &GpuBuffer,
) -> GpuResult<()> {
    check_len("count_active", h, rows * cols)?;
    check_len("count_active", thresholds, cols)?;
    check_len("count_active", active_count, rows)?;
    let params = params(rows, cols, 1, false, true)?;
    let grid = Grid::linear(
        rows as u64,
        rec.gpu().limits.max_compute_workgroups_per_dimension,
    );
    rec.launch(
        &key("count_active"),
        &params,
        &[(1, h), (5, thresholds), (6, active_count)],
        grid,
    )
}
