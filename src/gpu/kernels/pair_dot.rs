//! Dot products of gathered row pairs (shaders/pair_dot.wgsl): the one kernel of direct
//! attribution. With x the rows of each component at a batch's rows and y the encoder's columns
//! as rows, `out[r, b, a]` is component a's term in the pre-activation of the b-th latent the
//! SAE selected on row r; with per-head tables and `y_step` the same launch gives the heads'.

use super::{check_len, dim};
use crate::gpu::bindings::pair_dot::*;
use crate::gpu::error::{ensure, GpuResult};
use crate::gpu::params::PairDotParams;
use crate::gpu::{GpuBuffer, PipelineKey, Recorder, Shader};

const KERNEL: &str = "pair_dot";
const WG: u32 = 64;

/// An index that selects nothing: its outputs are 0 (a thresholded SAE's padded code).
pub const NONE: u32 = u32::MAX;

/// The shape of one launch: `rows` outputs blocks of `kb × ka`, rows of `dim` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairDotShape {
    pub rows: usize,
    pub ka: usize,
    pub kb: usize,
    pub dim: usize,
    /// Rows of y skipped per step of a (0: one table for every a).
    pub y_step: usize,
}

/// `out[r, b, a] = x[ia[r, a]] · y[ib[r, b] + a·y_step]` over `dim` values; x and y hold rows
/// of `dim` f32, ia [rows, ka] and ib [rows, kb] u32, out [rows, kb, ka].
pub fn launch_pair_dot(
    rec: &mut Recorder<'_>,
    x: &GpuBuffer,
    y: &GpuBuffer,
    ia: &GpuBuffer,
    ib: &GpuBuffer,
    out: &GpuBuffer,
    s: PairDotShape,
) -> GpuResult<()> {
    ensure(s.dim >= 1, KERNEL, || {
        "rows must hold at least one value".into()
    })?;
    check_len(KERNEL, ia, s.rows * s.ka)?;
    check_len(KERNEL, ib, s.rows * s.kb)?;
    let outputs = s.rows * s.kb * s.ka;
    check_len(KERNEL, out, outputs)?;
    let params = PairDotParams {
        rows: dim(KERNEL, "rows", s.rows)?,
        ka: dim(KERNEL, "ka", s.ka)?,
        kb: dim(KERNEL, "kb", s.kb)?,
        dim: dim(KERNEL, "dim", s.dim)?,
        y_step: dim(KERNEL, "y_step", s.y_step)?,
        nx: dim(KERNEL, "rows of x", x.len / s.dim)?,
        ny: dim(KERNEL, "rows of y", y.len / s.dim)?,
        _pad: 0,
    };
    // Flat offsets (index · dim, output ids) must stay within the shader's u32.
    dim(KERNEL, "outputs", outputs)?;
    dim(KERNEL, "elements of x", x.len)?;
    dim(KERNEL, "elements of y", y.len)?;
    if outputs == 0 {
        return Ok(());
    }
    let key = PipelineKey::new(Shader::PairDot, KERNEL).define("WG", WG);
    let grid = rec.threads_grid(outputs, WG);
    rec.launch(
        &key,
        &params,
        &[(X, x), (Y, y), (IA, ia), (IB, ib), (OUT, out)],
        grid,
    )
}
