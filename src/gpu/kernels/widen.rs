//! Uploaded activations (f32, or f16 / bf16 as stored) to f32 rows, divided by the input scale.

use super::{check_len, dim};
use crate::gpu::bindings::widen::*;
use crate::gpu::error::GpuResult;
use crate::gpu::params::WidenParams;
use crate::gpu::{GpuBuffer, PipelineKey, Recorder, Shader};

const KERNEL: &str = "widen";
const WG: u32 = 256;

/// How uploaded activations are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadDtype {
    F32,
    F16,
    Bf16,
}

impl UploadDtype {
    pub fn bytes(self) -> usize {
        match self {
            UploadDtype::F32 => 4,
            UploadDtype::F16 | UploadDtype::Bf16 => 2,
        }
    }
}

/// `x[i] = raw[i] / scale` for the first `n` elements, `raw` holding `dtype` values.
pub fn launch_widen(
    rec: &mut Recorder<'_>,
    raw: &GpuBuffer,
    dtype: UploadDtype,
    scale: f32,
    x: &GpuBuffer,
    n: usize,
) -> GpuResult<()> {
    check_len(KERNEL, x, n)?;
    if (raw.bytes() as usize) < n * dtype.bytes() {
        return Err(crate::gpu::GpuError::Shape {
            kernel: KERNEL,
            message: format!(
                "buffer '{}' holds {} bytes, needs {}",
                raw.label,
                raw.bytes(),
                n * dtype.bytes()
            ),
        });
    }
    let params = WidenParams {
        n: dim(KERNEL, "elements", n)?,
        mode: match dtype {
            UploadDtype::F32 => 0,
            UploadDtype::F16 => 1,
            UploadDtype::Bf16 => 2,
        },
        scale,
        _pad: 0,
    };
    let key = PipelineKey::new(Shader::Widen, KERNEL).define("WG", WG);
    let grid = rec.threads_grid(n, WG);
    rec.launch(&key, &params, &[(RAW, raw), (X, x)], grid)
}
