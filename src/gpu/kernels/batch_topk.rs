//! BatchTopK's selection over the whole batch (shaders/batch_topk.wgsl): of the rows' candidate
//! entries, keep the k·rows largest, zero the rest, and move the inference threshold θ.

use super::{check_len, dim};
use crate::gpu::bindings::batch_topk::*;
use crate::gpu::dispatch::Grid;
use crate::gpu::error::GpuResult;
use crate::gpu::params::BatchTopKParams;
use crate::gpu::{GpuBuffer, PipelineKey, Recorder, Shader};

const WG: u32 = 256;

/// Slots of the `state` buffer.
pub mod state {
    /// The batch's threshold t: candidates below it were zeroed.
    pub const BATCH_THRESHOLD: usize = 0;
    /// The inference threshold θ (a moving average of the smallest kept value).
    pub const THETA: usize = 1;
    /// The smallest kept value above zero in the last batch.
    pub const SMALLEST_KEPT: usize = 2;
    pub const COUNT: usize = 4;
}

/// Keeps the `keep` largest of the `n` candidate values in `top_val` (ties at the threshold
/// all kept), zeroes the rest in place, and updates θ in `state`: θ ← β·θ + (1 − β)·m, m the
/// smallest kept value above zero.
pub fn launch_batch_topk(
    rec: &mut Recorder<'_>,
    top_val: &GpuBuffer,
    n: usize,
    keep: usize,
    beta: f32,
    state_buf: &GpuBuffer,
) -> GpuResult<()> {
    const KERNEL: &str = "batch_topk";
    check_len(KERNEL, top_val, n)?;
    check_len(KERNEL, state_buf, state::COUNT)?;
    let params = BatchTopKParams {
        n: dim(KERNEL, "candidates", n)?,
        keep: dim(KERNEL, "kept entries", keep)?,
        beta,
        _pad: 0,
    };
    let key = |entry: &'static str| PipelineKey::new(Shader::BatchTopK, entry).define("WG", WG);
    let buffers = [(TOP_VAL, top_val), (STATE, state_buf)];
    rec.launch(
        &key("batch_threshold"),
        &params,
        &buffers,
        Grid::new(1, 1, 1),
    )?;
    let grid = rec.threads_grid(n, WG);
    rec.launch(&key("batch_keep"), &params, &buffers, grid)
}
