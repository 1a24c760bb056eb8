//! The element types activations are stored in, and converting their little-endian bytes:
//! to f32, or kept as stored (16-bit values go to the GPU as they are).

use half::{bf16, f16};
use serde::Serialize;

/// Element type of an activation tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActDtype {
    F32,
    F16,
    Bf16,
}

/// Copies little-endian 16-bit elements of `bytes` into `out`, as they are.
pub fn copy_raw16(bytes: &[u8], out: &mut [u16]) {
    for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = u16::from_le_bytes([b[0], b[1]]);
    }
}

/// Converts little-endian elements of `dtype` in `bytes` to f32 into `out`.
pub fn convert_rows(bytes: &[u8], dtype: ActDtype, out: &mut [f32]) {
    match dtype {
        ActDtype::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        ActDtype::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        ActDtype::Bf16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
    }
}

impl ActDtype {
    pub fn bytes(self) -> usize {
        match self {
            ActDtype::F32 => 4,
            ActDtype::F16 | ActDtype::Bf16 => 2,
        }
    }
}
