//! What a finished (or stopped) run reports; `summary.json` holds it.

use std::path::PathBuf;

use serde::Serialize;

use crate::analysis::eval::EvalSummary;
use crate::gpu::F16Overflow;

#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    pub steps: u64,
    pub tokens: u64,
    pub seconds: f64,
    pub tokens_per_s: f64,
    pub heldout: Option<EvalSummary>,
    pub run_dir: PathBuf,
    /// The most bytes of GPU buffers alive at once (what this process allocated; 0 when the
    /// run stopped early).
    pub peak_gpu_bytes: u64,
    /// How the encoder GEMM ran: `f32`, or `f16` on the matrix units.
    pub matmul: &'static str,
    /// With f16 operands: what f16 could not hold over the run (`None` in f32).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f16_overflow: Option<F16Overflow>,
}
