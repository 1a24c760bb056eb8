//! One streaming forward pass, built once per command with its buffers: each batch is written
//! to the GPU, encoded, selected and (unless only codes are wanted) decoded, together with
//! whatever the caller records after it, in one submission. Every batch replays the same
//! launches, so after the first it allocates nothing (their parameter buffers and bind groups
//! are kept in a [`LaunchCache`]). `sae eval`, `encode`, `hist` and both shard passes of
//! `sae categories` run on it.

use crate::gpu::{Gpu, GpuError, GpuResult, LaunchCache, Recorder};

use super::forward::{record_encode_select, record_forward, ForwardBuffers, GpuSae};

/// How far each batch goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassDepth {
    /// Encode and select: codes only.
    Codes,
    /// Codes and reconstructions (in the input's units).
    Reconstruct,
}

pub struct ForwardPass<'g, 's> {
    pub gpu: &'g Gpu,
    pub sae: &'s GpuSae,
    pub fw: ForwardBuffers,
    depth: PassDepth,
    cache: LaunchCache,
}

impl<'g, 's> ForwardPass<'g, 's> {
    /// A pass for batches of up to `capacity` rows.
    pub fn new(
        gpu: &'g Gpu,
        sae: &'s GpuSae,
        capacity: usize,
        depth: PassDepth,
    ) -> GpuResult<Self> {
        Ok(ForwardPass {
            gpu,
            sae,
            fw: ForwardBuffers::new(gpu, sae, capacity)?,
            depth,
            cache: LaunchCache::default(),
        })
    }

    pub fn capacity(&self) -> usize {
        self.fw.capacity
    }

    /// Runs `rows` rows of `x` ([rows, d_in] f32) through the SAE, then what `after` records
    /// (reading `self.fw`), as one submission. Does not wait for the GPU.
    pub fn run(
        &self,
        x: &[f32],
        rows: usize,
        after: impl FnOnce(&mut Recorder<'_>, &ForwardBuffers) -> GpuResult<()>,
    ) -> GpuResult<()> {
        if rows > self.fw.capacity || x.len() < rows * self.sae.d_in {
            return Err(GpuError::Shape {
                kernel: "forward pass",
                message: format!(
                    "a batch of {rows} rows ({} values) for a pass of {} rows of {}",
                    x.len(),
                    self.fw.capacity,
                    self.sae.d_in
                ),
            });
        }
        self.gpu.write(&self.fw.x, &x[..rows * self.sae.d_in])?;
        let mut rec = Recorder::cached(self.gpu, "forward pass", &self.cache);
        match self.depth {
            PassDepth::Codes => record_encode_select(&mut rec, self.sae, &self.fw, rows)?,
            PassDepth::Reconstruct => record_forward(&mut rec, self.sae, &self.fw, rows)?,
        }
        rec.stage("other");
        after(&mut rec, &self.fw)?;
        rec.submit()?;
        Ok(())
    }

    /// The last batch's codes: latent ids and values [rows, k] (waits for the GPU).
    pub fn codes(&self, rows: usize) -> GpuResult<(Vec<u32>, Vec<f32>)> {
        let k = self.sae.k;
        let mut idx: Vec<u32> = self.gpu.read(&self.fw.top_idx)?;
        let mut val: Vec<f32> = self.gpu.read(&self.fw.top_val)?;
        idx.truncate(rows * k);
        val.truncate(rows * k);
        Ok((idx, val))
    }

    /// The last batch's reconstructions (a transcoder's predictions) [rows, d_out] (waits for
    /// the GPU).
    pub fn reconstructions(&self, rows: usize) -> GpuResult<Vec<f32>> {
        let mut x_hat: Vec<f32> = self.gpu.read(&self.fw.x_hat)?;
        x_hat.truncate(rows * self.sae.d_out);
        Ok(x_hat)
    }

    /// Thresholded SAEs: each row's count of non-zero latents before the cap (waits).
    pub fn active_counts(&self, rows: usize) -> GpuResult<Option<Vec<u32>>> {
        match &self.fw.active {
            Some(active) => {
                let mut counts: Vec<u32> = self.gpu.read(active)?;
                counts.truncate(rows);
                Ok(Some(counts))
            }
            None => Ok(None),
        }
    }
}
