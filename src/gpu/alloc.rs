//! Counts of what the GPU layer allocates: buffers and bind groups created, and the bytes of
//! storage buffers alive now and at most. A steady-state training step or analysis batch
//! must create nothing (tests/steady_state.rs), and `sae bench train` reports the peak.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Allocations {
    buffers: AtomicU64,
    bind_groups: AtomicU64,
    live_bytes: AtomicU64,
    peak_bytes: AtomicU64,
}

/// A snapshot of [`Allocations`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct AllocationCounts {
    /// Buffers created since the device opened (storage, uniform, staging, readback).
    pub buffers: u64,
    /// Bind groups created since the device opened.
    pub bind_groups: u64,
    /// Bytes of buffers alive now.
    pub live_bytes: u64,
    /// The most `live_bytes` has been since the last [`Allocations::reset_peak`].
    pub peak_bytes: u64,
}

impl Allocations {
    pub fn counts(&self) -> AllocationCounts {
        AllocationCounts {
            buffers: self.buffers.load(Ordering::Relaxed),
            bind_groups: self.bind_groups.load(Ordering::Relaxed),
            live_bytes: self.live_bytes.load(Ordering::Relaxed),
            peak_bytes: self.peak_bytes.load(Ordering::Relaxed),
        }
    }

    pub fn reset_peak(&self) {
        self.peak_bytes
            .store(self.live_bytes.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    pub(crate) fn bind_group_created(&self) {
        self.bind_groups.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a new buffer of `bytes`; the returned guard gives them back when dropped.
    pub(crate) fn buffer_created(self: &Arc<Self>, bytes: u64) -> LiveBytes {
        self.buffers.fetch_add(1, Ordering::Relaxed);
        let live = self.live_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak_bytes.fetch_max(live, Ordering::Relaxed);
        LiveBytes {
            owner: self.clone(),
            bytes,
        }
    }
}

/// The bytes of one buffer, counted as live until it is dropped.
#[derive(Debug)]
pub struct LiveBytes {
    owner: Arc<Allocations>,
    bytes: u64,
}

impl Drop for LiveBytes {
    fn drop(&mut self) {
        self.owner
            .live_bytes
            .fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A wgpu buffer together with its place in the live-byte count.
#[derive(Debug)]
pub struct TrackedBuffer {
    pub buffer: wgpu::Buffer,
    _live: LiveBytes,
}

impl TrackedBuffer {
    pub(crate) fn new(buffer: wgpu::Buffer, live: LiveBytes) -> Self {
        TrackedBuffer {
            buffer,
            _live: live,
        }
    }
}

impl std::ops::Deref for TrackedBuffer {
    type Target = wgpu::Buffer;

    fn deref(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}
