//! Per-row TopK of ReLU(h) by radix select, with deterministic ties (lower index wins).

use super::{check_len, dim};
use crate::gpu::dispatch::Grid;
use crate::gpu::error::{ensure, GpuResult};
use crate::gpu::params::TopKParams;
use crate::gpu::{GpuBuffer, PipelineKey, Recorder, Shader};

const KERNEL: &str = "topk_rows";

/// The largest k the kernel sorts in workgroup memory (a power of two).
pub const MAX_K: usize = 512;

/// Records the TopK of each of `rows` rows of `h` (`cols` wide) into `top_idx`/`top_val`
/// ([rows, k], sorted by value descending, then index ascending). With `eligible`
/// ([cols] u32), only latents whose word is non-zero compete; if fewer than k are eligible,
/// the remaining slots hold value 0 (they contribute nothing downstream).
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
    let params = TopKParams {
        rows: dim(KERNEL, "rows", rows)?,
        cols: dim(KERNEL, "cols", cols)?,
        k: k as u32,
        sort_n: k.next_power_of_two() as u32,
        masked: u32::from(eligible.is_some()),
        _pad: [0; 3],
    };
    let key = PipelineKey::new(Shader::TopK, "topk_rows").define("MAX_K", MAX_K as u32);
    // Unmasked launches bind h in the mask's slot; the shader never reads it then.
    let mask = eligible.unwrap_or(h);
    let grid = Grid::linear(
        rows as u64,
        rec.gpu().limits.max_compute_workgroups_per_dimension,
    );
    rec.launch(
        &key,
        &params,
        &[(1, h), (2, top_idx), (3, top_val), (4, mask)],
        grid,
    )
}
