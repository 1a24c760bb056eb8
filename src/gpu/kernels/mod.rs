//! One thin `launch_*` wrapper per kernel: check shapes (an error, never a panic), fetch the
//! pipeline, bind, compute the grid, record into the caller's [`Recorder`](super::Recorder).

pub mod backward;
pub mod batch_topk;
pub mod cooccurrence_pairs;
pub mod coop;
pub mod decoder;
pub mod encoder;
pub mod gated;
pub mod hist;
pub mod input_norm;
pub mod jumprelu;
pub mod optim;
pub mod pair_dot;
pub mod penalty;
pub mod reduce;
pub mod skip;
pub mod topk;
pub mod widen;

use super::buffers::GpuBuffer;
use super::error::{GpuError, GpuResult};

/// A dimension as the u32 the shaders index with.
pub(crate) fn dim(kernel: &'static str, what: &str, value: usize) -> GpuResult<u32> {
    u32::try_from(value).map_err(|_| GpuError::Shape {
        kernel,
        message: format!("{what} = {value} exceeds the 32-bit index range of the shaders"),
    })
}

/// Fails unless `buffer` holds at least `needed` elements.
pub(crate) fn check_len(kernel: &'static str, buffer: &GpuBuffer, needed: usize) -> GpuResult<()> {
    if buffer.len < needed {
        return Err(GpuError::Shape {
            kernel,
            message: format!(
                "buffer '{}' holds {} elements, needs {needed}",
                buffer.label, buffer.len
            ),
        });
    }
    Ok(())
}

/// The latents one buffer of a split dictionary holds: ids `start .. start + len`
/// (src/sae/blocks.rs). A dictionary in one buffer is the block `whole(d_sae)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatentRange {
    pub start: usize,
    pub len: usize,
}

impl LatentRange {
    pub fn whole(d_sae: usize) -> Self {
        LatentRange {
            start: 0,
            len: d_sae,
        }
    }

    pub fn end(&self) -> usize {
        self.start + self.len
    }
}
