//! The gated SAE's activation on one block's bias-free pre-activations (shaders/gated.wgsl).

use super::{check_len, dim};
use crate::gpu::bindings::gated::*;
use crate::gpu::error::GpuResult;
use crate::gpu::params::GatedParams;
use crate::gpu::{GpuBuffer, PipelineKey, Recorder, Shader};

const KERNEL: &str = "gate";
const WG: u32 = 64;

/// A block's gate parameters: `b_gate`, `exp(r_mag)` and `b_mag`, each [block_len].
pub struct GateParams<'a> {
    pub b_gate: &'a GpuBuffer,
    pub mag_scale: &'a GpuBuffer,
    pub b_mag: &'a GpuBuffer,
}

/// `h ← 1{h + b_gate > 0}·max(exp(r_mag)·h + b_mag, 0)` over `h` [rows, cols], in place.
pub fn launch_gate(
    rec: &mut Recorder<'_>,
    h: &GpuBuffer,
    rows: usize,
    cols: usize,
    gate: GateParams<'_>,
) -> GpuResult<()> {
    check_len(KERNEL, h, rows * cols)?;
    for vector in [gate.b_gate, gate.mag_scale, gate.b_mag] {
        check_len(KERNEL, vector, cols)?;
    }
    let params = GatedParams {
        rows: dim(KERNEL, "rows", rows)?,
        cols: dim(KERNEL, "cols", cols)?,
        _pad: [0; 2],
    };
    dim(KERNEL, "rows × cols", rows * cols)?;
    let key = PipelineKey::new(Shader::Gated, KERNEL).define("WG", WG);
    let grid = rec.threads_grid(rows * cols, WG);
    rec.launch(
        &key,
        &params,
        &[
            (H, h),
            (B_GATE, gate.b_gate),
            (MAG_SCALE, gate.mag_scale),
            (B_MAG, gate.b_mag),
        ],
        grid,
    )
}
