//! One batch for one or several trainers: written once into one of two upload buffers, then
//! every trainer's step recorded into one command encoder and submitted together. A sweep
//! steps all its SAEs this way; a single run is a feed of one trainer, so the two are the same
//! computation on the same data.
//!
//! The upload buffers alternate so the next batch is written while the GPU works on the last;
//! the host waits only when it is more than [`MAX_IN_FLIGHT`] steps ahead of the GPU.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::data::{ActDtype, Batch};
use crate::gpu::kernels::widen::UploadDtype;
use crate::gpu::recorder::Timings;
use crate::gpu::{Gpu, GpuBuffer, GpuError, GpuResult, LaunchCache, Recorder};

use super::gpu_state::Trainer;
use super::step::{MemberStep, Upload};

/// Steps submitted but not known to be finished before the host waits for the oldest.
pub const MAX_IN_FLIGHT: usize = 2;

pub struct Feed<'g> {
    gpu: &'g Gpu,
    rows: usize,
    d_in: usize,
    /// Raw batches (f32 words, or 16-bit values in pairs).
    uploads: [GpuBuffer; 2],
    /// A transcoder's targets beside each upload: (d_out, buffers).
    target_uploads: Option<(usize, [GpuBuffer; 2])>,
    next_upload: usize,
    /// Parameter buffers and bind groups of every trainer's launches, built by the first step.
    cache: LaunchCache,
    in_flight: VecDeque<wgpu::SubmissionIndex>,
    /// Time the host spent waiting for the GPU to catch up, and inside `queue.submit` (which
    /// on CPU drivers such as lavapipe runs the work itself); `sae bench train` reports host
    /// time per step without either.
    pub waited: Duration,
    pub submitting: Duration,
}

impl<'g> Feed<'g> {
    /// A feed of batches of `rows` rows of `d_in` values.
    pub fn new(gpu: &'g Gpu, rows: usize, d_in: usize) -> GpuResult<Feed<'g>> {
        Ok(Feed {
            gpu,
            rows,
            d_in,
            uploads: [
                gpu.storage::<f32>("upload 0", rows * d_in)?,
                gpu.storage::<f32>("upload 1", rows * d_in)?,
            ],
            target_uploads: None,
            next_upload: 0,
            cache: LaunchCache::default(),
            in_flight: VecDeque::new(),
            waited: Duration::ZERO,
            submitting: Duration::ZERO,
        })
    }

    /// A feed of rows with their targets (`d_out` values each), for transcoders.
    pub fn paired(gpu: &'g Gpu, rows: usize, d_in: usize, d_out: usize) -> GpuResult<Feed<'g>> {
        let mut feed = Feed::new(gpu, rows, d_in)?;
        feed.target_uploads = Some((
            d_out,
            [
                gpu.storage::<f32>("target upload 0", rows * d_out)?,
                gpu.storage::<f32>("target upload 1", rows * d_out)?,
            ],
        ));
        Ok(feed)
    }

    /// Bytes of GPU memory a feed allocates (`d_out`: with targets of that width).
    pub fn bytes(rows: usize, d_in: usize, d_out: Option<usize>) -> u64 {
        2 * 4 * (rows * (d_in + d_out.unwrap_or(0))) as u64
    }

    /// Writes a streamed batch (f32, or 16-bit as stored) into the next upload buffer. The
    /// write is queued: it reaches the GPU with the next submission, after the steps before.
    fn upload(&mut self, batch: &Batch) -> GpuResult<Upload<'_>> {
        let (bytes, dtype): (&[u8], _) = match batch.half_dtype {
            Some(ActDtype::Bf16) => (bytemuck::cast_slice(&batch.half), UploadDtype::Bf16),
            Some(_) => (bytemuck::cast_slice(&batch.half), UploadDtype::F16),
            None => (bytemuck::cast_slice(&batch.x), UploadDtype::F32),
        };
        if batch.rows != self.rows || bytes.len() != batch.rows * self.d_in * dtype.bytes() {
            return Err(GpuError::Shape {
                kernel: "train step",
                message: format!(
                    "a batch of {} rows ({} bytes) for a feed of {} rows of {}",
                    batch.rows,
                    bytes.len(),
                    self.rows,
                    self.d_in
                ),
            });
        }
        let slot = self.next_upload;
        self.next_upload = 1 - slot;
        self.gpu.write(&self.uploads[slot], bytes)?;
        let target = match &self.target_uploads {
            None => None,
            Some((d_out, buffers)) => {
                let bytes: &[u8] = match batch.half_dtype {
                    Some(_) => bytemuck::cast_slice(&batch.half_y),
                    None => bytemuck::cast_slice(&batch.y),
                };
                if bytes.len() != batch.rows * d_out * dtype.bytes() {
                    return Err(GpuError::Shape {
                        kernel: "train step",
                        message: format!(
                            "a batch of {} rows with {} bytes of targets for a feed of targets of width {d_out}",
                            batch.rows,
                            bytes.len()
                        ),
                    });
                }
                self.gpu.write(&buffers[slot], bytes)?;
                Some(&buffers[slot])
            }
        };
        Ok(Upload {
            raw: &self.uploads[slot],
            target,
            dtype,
            rows: batch.rows,
        })
    }

    /// Uploads `batch` once and submits one optimiser step of every trainer on it, in order,
    /// as one submission.
    pub fn step<'t>(
        &mut self,
        batch: &Batch,
        members: impl IntoIterator<Item = (&'t mut Trainer<'g>, MemberStep)>,
    ) -> GpuResult<()>
    where
        'g: 't,
    {
        let gpu = self.gpu;
        let cache = self.cache.clone();
        let upload = self.upload(batch)?;
        let mut rec = Recorder::cached(gpu, "train step", &cache);
        let mut copies = Vec::new();
        for (trainer, args) in members {
            let slot = trainer.record_batch_step(&mut rec, upload, args)?;
            copies.push((trainer, slot));
        }
        let start = Instant::now();
        let index = rec.submit()?;
        self.submitting += start.elapsed();
        for (trainer, slot) in copies {
            trainer.submitted(slot);
        }
        self.in_flight.push_back(index);
        while self.in_flight.len() > MAX_IN_FLIGHT {
            if let Some(oldest) = self.in_flight.pop_front() {
                let start = Instant::now();
                gpu.device
                    .poll(wgpu::PollType::Wait {
                        submission_index: Some(oldest),
                        timeout: None,
                    })
                    .map_err(|e| GpuError::DeviceLost(e.to_string()))?;
                self.waited += start.elapsed();
            }
        }
        Ok(())
    }

    /// One step of one trainer with every dispatch timed (waits for the GPU); for benchmarks.
    pub fn step_timed(
        &mut self,
        batch: &Batch,
        trainer: &mut Trainer<'g>,
        args: MemberStep,
    ) -> GpuResult<Timings> {
        let gpu = self.gpu;
        let cache = self.cache.clone();
        let upload = self.upload(batch)?;
        let mut rec = Recorder::cached_timed(gpu, "train step", &cache, 256)?;
        let args = MemberStep {
            with_metrics: false,
            ..args
        };
        trainer.record_batch_step(&mut rec, upload, args)?;
        rec.submit_timed()
    }

    /// Steps one trainer on f32 rows (tests): the rows as a [`Batch`].
    pub fn step_rows(
        &mut self,
        x: &[f32],
        trainer: &mut Trainer<'g>,
        args: MemberStep,
    ) -> GpuResult<()> {
        self.step_pairs(x, &[], trainer, args)
    }

    /// Steps one trainer on f32 rows and their targets `y` (tests; empty for an SAE).
    pub fn step_pairs(
        &mut self,
        x: &[f32],
        y: &[f32],
        trainer: &mut Trainer<'g>,
        args: MemberStep,
    ) -> GpuResult<()> {
        let batch = Batch {
            x: x.to_vec(),
            y: y.to_vec(),
            rows: x.len() / self.d_in.max(1),
            ..Batch::default()
        };
        self.step(&batch, [(trainer, args)])
    }
}
