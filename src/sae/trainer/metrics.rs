//! The step's figures read back without waiting: each logged step copies its `stats`, dead
//! count and fire counts into a ring of mappable buffers that the host reads a few steps later.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::gpu::alloc::TrackedBuffer;
use crate::gpu::{Gpu, GpuBuffer, GpuError, GpuResult, Recorder};

/// Metrics copies in flight at most; a further request waits for the oldest.
const METRICS_RING: usize = 4;

/// Figures of one step, read back on request.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepMetrics {
    pub fvu: f64,
    pub auxk_loss: f64,
    pub l0: f64,
    pub dead: u32,
}

/// The buffers a step's figures are copied from.
pub(super) struct MetricsSource<'a> {
    pub stats: &'a GpuBuffer,
    pub dead_count: &'a GpuBuffer,
    pub batch_fired: &'a GpuBuffer,
}

/// Host-mapped copies of a step's `stats`, dead count and fire counts, read a few steps later.
pub(super) struct MetricsRing {
    slots: Vec<MetricsSlot>,
    /// Slots holding a requested copy, in step order.
    pending: VecDeque<usize>,
    /// Copies read early (when every slot was taken), not yet handed out.
    done: VecDeque<RingRead>,
    d_sae: usize,
}

/// A metrics copy read back: (step, stats, fire counts, dead count).
pub(super) type RingRead = (u64, Vec<f32>, Vec<u32>, u32);

struct MetricsSlot {
    buffer: TrackedBuffer,
    step: u64,
    /// 0: free or copying, 1: mapped, 2: mapping failed.
    state: Arc<AtomicU8>,
}

/// Byte offsets in a slot: stats (16 bytes), dead count, fire counts.
const DEAD_AT: u64 = 16;
const FIRED_AT: u64 = 32;

impl MetricsRing {
    pub(super) fn new(gpu: &Gpu, d_sae: usize) -> GpuResult<MetricsRing> {
        let size = FIRED_AT + (4 * d_sae as u64).div_ceil(16) * 16;
        let slots = (0..METRICS_RING)
            .map(|i| {
                let (buffer, live) = gpu.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(&format!("metrics ring {i}")),
                    size,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                MetricsSlot {
                    buffer: TrackedBuffer::new(buffer, live),
                    step: 0,
                    state: Arc::new(AtomicU8::new(0)),
                }
            })
            .collect();
        Ok(MetricsRing {
            slots,
            pending: VecDeque::new(),
            done: VecDeque::new(),
            d_sae,
        })
    }

    /// A free slot for `step`'s metrics; waits for the oldest copy when all are in use.
    pub(super) fn acquire(&mut self, gpu: &Gpu, step: u64) -> GpuResult<usize> {
        let free = (0..self.slots.len()).find(|i| !self.pending.contains(i));
        let slot = match free {
            Some(slot) => slot,
            None => {
                // Every slot holds an unread copy: wait for the oldest and keep its figures
                // for the next ready_metrics.
                gpu.device
                    .poll(wgpu::PollType::wait_indefinitely())
                    .map_err(|e| GpuError::DeviceLost(e.to_string()))?;
                let oldest = self.pending.front().copied().unwrap_or(0);
                if let Some(read) = self.take_ready()? {
                    self.done.push_back(read);
                }
                oldest
            }
        };
        self.slots[slot].step = step;
        self.slots[slot].state.store(0, Ordering::Release);
        Ok(slot)
    }

    /// Records the copies of a step's figures into `slot`.
    pub(super) fn record_copy(
        &self,
        rec: &mut Recorder<'_>,
        slot: usize,
        source: MetricsSource<'_>,
    ) -> GpuResult<()> {
        let target = &self.slots[slot].buffer;
        rec.copy_range(&source.stats.buffer, target, 0, 16);
        rec.copy_range(&source.dead_count.buffer, target, DEAD_AT, 16);
        let fired_bytes = (4 * self.d_sae as u64).div_ceil(16) * 16;
        rec.copy_range(&source.batch_fired.buffer, target, FIRED_AT, fired_bytes);
        Ok(())
    }

    /// Asks for `slot` to be mapped once its submission is done.
    pub(super) fn map(&mut self, slot: usize) {
        let state = self.slots[slot].state.clone();
        self.slots[slot]
            .buffer
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |result| {
                state.store(if result.is_ok() { 1 } else { 2 }, Ordering::Release);
            });
        self.pending.push_back(slot);
    }

    /// The oldest copy read early, or the oldest pending one once it is mapped.
    /// Whether a copy waits to be read.
    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub(super) fn next_ready(&mut self) -> GpuResult<Option<RingRead>> {
        match self.done.pop_front() {
            Some(read) => Ok(Some(read)),
            None => self.take_ready(),
        }
    }

    /// The oldest pending copy, when it is mapped.
    fn take_ready(&mut self) -> GpuResult<Option<RingRead>> {
        let Some(&slot) = self.pending.front() else {
            return Ok(None);
        };
        let entry = &self.slots[slot];
        match entry.state.load(Ordering::Acquire) {
            0 => return Ok(None),
            1 => {}
            _ => {
                self.pending.pop_front();
                return Err(GpuError::Map {
                    label: "metrics ring".into(),
                    message: "mapping the step metrics failed".into(),
                });
            }
        }
        let view = entry
            .buffer
            .slice(..)
            .get_mapped_range()
            .map_err(|e| GpuError::Map {
                label: "metrics ring".into(),
                message: e.to_string(),
            })?;
        let stats: Vec<f32> = bytemuck::pod_collect_to_vec(&view[..16]);
        let dead = u32::from_le_bytes([view[16], view[17], view[18], view[19]]);
        let fired_end = FIRED_AT as usize + 4 * self.d_sae;
        let fired: Vec<u32> = bytemuck::pod_collect_to_vec(&view[FIRED_AT as usize..fired_end]);
        drop(view);
        entry.buffer.unmap();
        let step = entry.step;
        self.pending.pop_front();
        Ok(Some((step, stats, fired, dead)))
    }
}
