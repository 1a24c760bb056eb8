//! Per-row TopK of ReLU(h) by radix select, with deterministic ties (lower index wins).
//! Split dictionaries select per block into candidate slots, then merge the candidates.

use super::{check_len, dim, LatentRange};
use crate::gpu::bindings::topk::*;
use crate::gpu::dispatch::Grid;
use crate::gpu::error::{ensure, GpuResult};
use crate::gpu::params::TopKParams;
use crate::gpu::{GpuBuffer, PipelineKey, Recorder, Shader};

const KERNEL: &str = "topk_rows";

/// The largest k the kernel sorts in workgroup memory (a power of two).
pub const MAX_K: usize = 512;

/// Rows of at most this many latents, with k ≤ [`NARROW_K`], take the one-invocation-per-row
/// path (`topk_rows_narrow`); wider rows the radix select.
pub const NARROW_COLS: usize = 1024;
/// The largest k of the narrow path (its private arrays' length).
pub const NARROW_K: usize = 64;
/// Rows per workgroup on the narrow path.
const NARROW_WG: u32 = 64;

/// Which selection path runs; tests force each to compare them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopKPath {
    /// Narrow rows one invocation each, wide rows by radix select.
    Auto,
    Radix,
    Narrow,
}

fn narrow(path: TopKPath, cols: usize, k: usize) -> bool {
    match path {
        TopKPath::Auto => cols <= NARROW_COLS && k <= NARROW_K,
        TopKPath::Radix => false,
        TopKPath::Narrow => k <= NARROW_K,
    }
}

thread_local! {
    static FORCED_PATH: std::cell::Cell<TopKPath> = const { std::cell::Cell::new(TopKPath::Auto) };
}

/// Forces the selection path for launches recorded on this thread (tests compare the paths).
pub fn force_path(path: TopKPath) {
    FORCED_PATH.with(|p| p.set(path));
}

/// Per-latent thresholds for ReLU/JumpReLU SAEs: values ≤ θ_i count as zero.
pub struct Thresholds<'a>(pub &'a GpuBuffer);

/// Where a pass writes its [rows, k] winners: columns `offset .. offset + k` of a
/// [rows, stride] pair of buffers.
pub struct TopKOut<'a> {
    pub idx: &'a GpuBuffer,
    pub val: &'a GpuBuffer,
    pub stride: usize,
    pub offset: usize,
}

fn params(rows: usize, cols: usize, k: usize) -> GpuResult<TopKParams> {
    Ok(TopKParams {
        rows: dim(KERNEL, "rows", rows)?,
        cols: dim(KERNEL, "cols", cols)?,
        k: k as u32,
        sort_n: k.next_power_of_two() as u32,
        out_stride: k as u32,
        ..Default::default()
    })
}

/// Threads of the radix path: one per bin of its 8-bit digits (RADIX_BITS in the shader).
const RADIX_WG: u32 = 256;

fn key(entry: &'static str) -> PipelineKey {
    PipelineKey::new(Shader::TopK, entry)
        .define("WG", RADIX_WG)
        .define("MAX_K", MAX_K as u32)
        .define("NARROW_K", NARROW_K as u32)
        .define("NARROW_WG", NARROW_WG)
}

/// The selection entry point and grid for `rows` rows of `cols` latents.
fn selection(rec: &Recorder<'_>, rows: usize, cols: usize, k: usize) -> (PipelineKey, Grid) {
    let limit = rec.gpu().limits.max_compute_workgroups_per_dimension;
    if narrow(FORCED_PATH.with(|p| p.get()), cols, k) {
        let groups = rows.div_ceil(NARROW_WG as usize) as u64;
        (key("topk_rows_narrow"), Grid::linear(groups, limit))
    } else {
        (key("topk_rows"), Grid::linear(rows as u64, limit))
    }
}

fn check_k(k: usize, cols: usize) -> GpuResult<()> {
    ensure((1..=MAX_K).contains(&k), KERNEL, || {
        format!("k = {k} must be between 1 and {MAX_K}")
    })?;
    ensure(k <= cols, KERNEL, || {
        format!("k = {k} exceeds the {cols} latents")
    })
}

fn row_grid(rec: &Recorder<'_>, rows: usize) -> Grid {
    Grid::linear(
        rows as u64,
        rec.gpu().limits.max_compute_workgroups_per_dimension,
    )
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
    let out = TopKOut {
        idx: top_idx,
        val: top_val,
        stride: k,
        offset: 0,
    };
    launch_topk_block(
        rec,
        h,
        rows,
        LatentRange::whole(cols),
        k,
        out,
        eligible,
        thresholds,
    )
}

/// TopK over one block of latents: `h` is the block's [rows, block.len] pre-activations;
/// `eligible` and `thresholds` cover the whole dictionary; winners get their global ids.
#[allow(clippy::too_many_arguments)]
pub fn launch_topk_block(
    rec: &mut Recorder<'_>,
    h: &GpuBuffer,
    rows: usize,
    block: LatentRange,
    k: usize,
    out: TopKOut<'_>,
    eligible: Option<&GpuBuffer>,
    thresholds: Option<Thresholds<'_>>,
) -> GpuResult<()> {
    check_k(k, block.len)?;
    check_len(KERNEL, h, rows * block.len)?;
    check_out(&out, rows, k)?;
    if let Some(mask) = eligible {
        check_len(KERNEL, mask, block.end())?;
    }
    if let Some(Thresholds(theta)) = &thresholds {
        check_len(KERNEL, theta, block.end())?;
    }
    let mut params = params(rows, block.len, k)?;
    params.masked = u32::from(eligible.is_some());
    params.thresholded = u32::from(thresholds.is_some());
    params.col_offset = dim(KERNEL, "first latent", block.start)?;
    params.out_stride = dim(KERNEL, "output stride", out.stride)?;
    params.out_offset = dim(KERNEL, "output offset", out.offset)?;
    // Unused optional inputs bind h in their slot; the shader never reads them then.
    let mask = eligible.unwrap_or(h);
    let theta = thresholds.map_or(h, |t| t.0);
    let (key, grid) = selection(rec, rows, block.len, k);
    rec.launch(
        &key,
        &params,
        &[
            (H, h),
            (TOP_IDX, out.idx),
            (TOP_VAL, out.val),
            (ELIGIBLE, mask),
            (THRESHOLD, theta),
            (CAND_IDX, h),
        ],
        grid,
    )
}

/// The final TopK over the blocks' candidates ([rows, n_cand] values and latent ids, in block
/// order) into `top_idx`/`top_val` [rows, k]: the same result as one TopK over the whole
/// dictionary. `eligible` as in [`launch_topk`], indexed by latent id.
#[allow(clippy::too_many_arguments)]
pub fn launch_topk_merge(
    rec: &mut Recorder<'_>,
    cand_val: &GpuBuffer,
    cand_idx: &GpuBuffer,
    rows: usize,
    n_cand: usize,
    k: usize,
    top_idx: &GpuBuffer,
    top_val: &GpuBuffer,
    eligible: Option<&GpuBuffer>,
) -> GpuResult<()> {
    check_k(k, n_cand)?;
    check_len(KERNEL, cand_val, rows * n_cand)?;
    check_len(KERNEL, cand_idx, rows * n_cand)?;
    check_len(KERNEL, top_idx, rows * k)?;
    check_len(KERNEL, top_val, rows * k)?;
    let mut params = params(rows, n_cand, k)?;
    params.masked = u32::from(eligible.is_some());
    params.remap = 1;
    let mask = eligible.unwrap_or(cand_val);
    let (key, grid) = selection(rec, rows, n_cand, k);
    rec.launch(
        &key,
        &params,
        &[
            (H, cand_val),
            (TOP_IDX, top_idx),
            (TOP_VAL, top_val),
            (ELIGIBLE, mask),
            (THRESHOLD, cand_val),
            (CAND_IDX, cand_idx),
        ],
        grid,
    )
}

fn check_out(out: &TopKOut<'_>, rows: usize, k: usize) -> GpuResult<()> {
    ensure(out.offset + k <= out.stride, KERNEL, || {
        format!(
            "output columns {}..{} exceed the row stride {}",
            out.offset,
            out.offset + k,
            out.stride
        )
    })?;
    check_len(KERNEL, out.idx, rows * out.stride)?;
    check_len(KERNEL, out.val, rows * out.stride)
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
    launch_count_active_block(
        rec,
        h,
        rows,
        LatentRange::whole(cols),
        thresholds,
        active_count,
    )
}

/// [`launch_count_active`] over one block of latents: the first block writes, later ones add.
pub fn launch_count_active_block(
    rec: &mut Recorder<'_>,
    h: &GpuBuffer,
    rows: usize,
    block: LatentRange,
    thresholds: &GpuBuffer,
    active_count: &GpuBuffer,
) -> GpuResult<()> {
    check_len("count_active", h, rows * block.len)?;
    check_len("count_active", thresholds, block.end())?;
    check_len("count_active", active_count, rows)?;
    let mut params = params(rows, block.len, 1)?;
    params.thresholded = 1;
    params.col_offset = dim("count_active", "first latent", block.start)?;
    params.accumulate = u32::from(block.start > 0);
    let grid = row_grid(rec, rows);
    rec.launch(
        &key("count_active"),
        &params,
        &[
            (H, h),
            (THRESHOLD, thresholds),
            (ACTIVE_COUNT, active_count),
        ],
        grid,
    )
}
