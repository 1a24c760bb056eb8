//! Dictionaries larger than one storage binding, split into blocks of latents.
//!
//! A wgpu storage binding holds at most `max_storage_buffer_binding_size` bytes (128 MiB by
//! default), but W_enc of d_in 4096 × d_sae 65536 in f32 is 1 GiB. Every per-latent tensor
//! (W_enc's columns, b_enc, W_dec's rows, their gradients and Adam moments, and the
//! pre-activations h [rows, d_sae]) is therefore held as one buffer per block of consecutive
//! latents, and every kernel runs per block (src/gpu/kernels: the `*_block` launches). TopK
//! selects per block, then once more over the blocks' candidates. Host-side tensors keep their
//! usual full layout; `split_*` and `join_*` convert.

use crate::gpu::kernels::LatentRange;
use crate::gpu::GpuError;

/// How the latents of one dictionary are divided into blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatentBlocks {
    pub d_in: usize,
    /// The decoder's width (d_in for an SAE).
    pub d_out: usize,
    pub d_sae: usize,
    pub ranges: Vec<LatentRange>,
}

/// Per-latent tensors and where the latent axis lies in them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatentTensor {
    /// W_enc [d_in, d_sae]: a latent is a column.
    Encoder,
    /// b_enc and other [d_sae] vectors.
    Vector,
    /// W_dec [d_sae, d_out]: a latent is a row.
    Decoder,
}

impl LatentBlocks {
    /// The whole dictionary in one block.
    pub fn single(d_in: usize, d_out: usize, d_sae: usize) -> Self {
        LatentBlocks {
            d_in,
            d_out,
            d_sae,
            ranges: vec![LatentRange::whole(d_sae)],
        }
    }

    /// The fewest blocks such that each block's W_enc ([d_in, n] f32), W_dec ([n, d_out]) and
    /// pre-activations for `rows` rows ([rows, n] f32) fit in `limit` bytes. Block lengths are
    /// multiples of 4 (the encoder GEMM's vector loads) except the last.
    pub fn plan(
        d_in: usize,
        d_out: usize,
        d_sae: usize,
        rows: usize,
        limit: u64,
    ) -> Result<Self, GpuError> {
        let width = d_in.max(d_out);
        let per_latent = 4 * width.max(rows).max(1) as u64;
        // Buffers are padded to 16 bytes: leave room for that.
        let fit = (limit.saturating_sub(16) / per_latent) as usize;
        if fit >= d_sae {
            return Ok(LatentBlocks::single(d_in, d_out, d_sae));
        }
        if fit == 0 {
            let what = if width >= rows && d_out == d_in {
                format!("one latent's weights (d_in = {d_in})")
            } else if width >= rows {
                format!("one latent's weights (d_in = {d_in}, d_out = {d_out})")
            } else {
                format!("one latent's pre-activations for a batch of {rows} rows")
            };
            return Err(GpuError::Limit {
                what,
                needed: per_latent,
                limit,
                limit_name: "max_storage_buffer_binding_size",
            });
        }
        let blocks = d_sae.div_ceil(fit);
        let mut len = d_sae.div_ceil(blocks);
        if len.next_multiple_of(4) <= fit {
            len = len.next_multiple_of(4);
        }
        let ranges = (0..d_sae)
            .step_by(len)
            .map(|start| LatentRange {
                start,
                len: len.min(d_sae - start),
            })
            .collect();
        Ok(LatentBlocks {
            d_in,
            d_out,
            d_sae,
            ranges,
        })
    }

    pub fn is_split(&self) -> bool {
        self.ranges.len() > 1
    }

    /// Candidate slots per row when each block contributes its own top `k`.
    pub fn candidates(&self, k: usize) -> usize {
        self.ranges.iter().map(|r| r.len.min(k)).sum()
    }

    fn rows_of(&self, tensor: LatentTensor) -> usize {
        match tensor {
            LatentTensor::Encoder => self.d_in,
            LatentTensor::Vector | LatentTensor::Decoder => 1,
        }
    }

    fn width_of(&self, tensor: LatentTensor) -> usize {
        match tensor {
            LatentTensor::Decoder => self.d_out,
            LatentTensor::Encoder | LatentTensor::Vector => 1,
        }
    }

    /// One full-layout tensor → one tensor per block.
    pub fn split(&self, tensor: LatentTensor, full: &[f32]) -> Vec<Vec<f32>> {
        let (rows, width) = (self.rows_of(tensor), self.width_of(tensor));
        debug_assert_eq!(full.len(), rows * self.d_sae * width);
        self.ranges
            .iter()
            .map(|r| {
                let mut part = Vec::with_capacity(rows * r.len * width);
                for row in 0..rows {
                    let at = (row * self.d_sae + r.start) * width;
                    part.extend_from_slice(&full[at..at + r.len * width]);
                }
                part
            })
            .collect()
    }

    /// One tensor per block → the full layout.
    pub fn join(&self, tensor: LatentTensor, parts: &[Vec<f32>]) -> Vec<f32> {
        let (rows, width) = (self.rows_of(tensor), self.width_of(tensor));
        let mut full = Vec::with_capacity(rows * self.d_sae * width);
        for row in 0..rows {
            for (r, part) in self.ranges.iter().zip(parts) {
                let at = row * r.len * width;
                full.extend_from_slice(&part[at..at + r.len * width]);
            }
        }
        full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_fits_each_block_and_covers_every_latent() {
        let plan = LatentBlocks::plan(16, 16, 103, 8, 16 * 4 * 24 + 16).unwrap();
        assert!(plan.is_split());
        let mut next = 0;
        for r in &plan.ranges {
            assert_eq!(r.start, next);
            assert!(r.len * 16 * 4 + 16 <= 16 * 4 * 24 + 16);
            next = r.end();
        }
        assert_eq!(next, 103);
        // 103 = 4 × 24 + 7: the short last block offers all 7 of its latents.
        assert_eq!(plan.ranges.len(), 5);
        assert_eq!(plan.candidates(8), 4 * 8 + 7);
        assert!(!LatentBlocks::plan(16, 16, 103, 8, 1 << 20)
            .unwrap()
            .is_split());
        assert!(LatentBlocks::plan(16, 16, 103, 8, 32).is_err());
    }

    #[test]
    fn split_then_join_is_the_identity() {
        let plan = LatentBlocks::plan(3, 3, 10, 2, 4 * 3 * 4 + 16).unwrap();
        assert!(plan.ranges.len() >= 3);
        for tensor in [
            LatentTensor::Encoder,
            LatentTensor::Vector,
            LatentTensor::Decoder,
        ] {
            let n = plan.rows_of(tensor) * 10 * plan.width_of(tensor);
            let full: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let parts = plan.split(tensor, &full);
            assert_eq!(parts.len(), plan.ranges.len());
            assert_eq!(plan.join(tensor, &parts), full);
        }
        // W_enc [3, 10]: the first block holds the first columns of every row.
        let full: Vec<f32> = (0..30).map(|i| i as f32).collect();
        let first = &plan.split(LatentTensor::Encoder, &full)[0];
        let len = plan.ranges[0].len;
        assert_eq!(&first[..len], &full[..len]);
        assert_eq!(first[len], 10.0);
    }
}
