//! Storage buffers, uploads and the one readback path (copy → submit → map → poll → copy out →
//! unmap) with a reused staging buffer.

use std::sync::mpsc;

use bytemuck::Pod;

use super::alloc::{LiveBytes, TrackedBuffer};
use super::device::Gpu;
use super::error::{first_line, GpuError, GpuResult};

/// A GPU storage buffer holding `len` elements of `elem_bytes` each.
pub struct GpuBuffer {
    pub buffer: wgpu::Buffer,
    pub len: usize,
    pub elem_bytes: usize,
    pub label: String,
    _live: LiveBytes,
}

impl GpuBuffer {
    pub fn bytes(&self) -> u64 {
        (self.len * self.elem_bytes) as u64
    }

    pub fn binding(&self) -> wgpu::BindingResource<'_> {
        self.buffer.as_entire_binding()
    }
}

/// wgpu copies and writes move whole 4-byte words, an empty buffer cannot be bound, and
/// kernels may read any buffer as an array of 16-byte vec4s.
fn padded_size(bytes: u64) -> u64 {
    bytes.max(16).div_ceil(16) * 16
}

const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl Gpu {
    /// An uninitialised (zeroed by wgpu) storage buffer of `len` elements of `T`.
    pub fn storage<T: Pod>(&self, label: &str, len: usize) -> GpuResult<GpuBuffer> {
        let elem_bytes = std::mem::size_of::<T>();
        let bytes = (len * elem_bytes) as u64;
        self.check_binding(label, bytes)?;
        let (buffer, live) = self.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: padded_size(bytes),
            usage: STORAGE_USAGE,
            mapped_at_creation: false,
        });
        Ok(GpuBuffer {
            buffer,
            len,
            elem_bytes,
            label: label.to_string(),
            _live: live,
        })
    }

    /// A storage buffer holding a copy of `data`.
    pub fn upload<T: Pod>(&self, label: &str, data: &[T]) -> GpuResult<GpuBuffer> {
        let elem_bytes = std::mem::size_of::<T>();
        let bytes = std::mem::size_of_val(data) as u64;
        self.check_binding(label, bytes)?;
        let mut contents = bytemuck::cast_slice::<T, u8>(data).to_vec();
        contents.resize(padded_size(bytes) as usize, 0);
        let (buffer, live) = self.initialised_buffer(label, &contents, STORAGE_USAGE);
        Ok(GpuBuffer {
            buffer,
            len: data.len(),
            elem_bytes,
            label: label.to_string(),
            _live: live,
        })
    }

    /// Overwrites the start of `target` with `data` (queued; ordered before later submits).
    pub fn write<T: Pod>(&self, target: &GpuBuffer, data: &[T]) -> GpuResult<()> {
        let bytes = bytemuck::cast_slice::<T, u8>(data);
        if bytes.len() as u64 > target.buffer.size() {
            return Err(GpuError::Shape {
                kernel: "write",
                message: format!(
                    "{} bytes do not fit in buffer '{}' of {} bytes",
                    bytes.len(),
                    target.label,
                    target.buffer.size()
                ),
            });
        }
        if bytes.len().is_multiple_of(4) {
            self.queue.write_buffer(&target.buffer, 0, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().div_ceil(4) * 4, 0);
            self.queue.write_buffer(&target.buffer, 0, &padded);
        }
        Ok(())
    }

    /// Fills a buffer with a 32-bit pattern; tests use NaN to catch unwritten outputs.
    pub fn fill_u32(&self, target: &GpuBuffer, pattern: u32) {
        let words = (target.buffer.size() / 4) as usize;
        self.queue.write_buffer(
            &target.buffer,
            0,
            bytemuck::cast_slice(&vec![pattern; words]),
        );
    }

    /// A small uniform buffer holding a kernel's parameter struct (`bytes`, a multiple of 4).
    pub fn uniform(&self, label: &str, bytes: &[u8]) -> TrackedBuffer {
        let usage = wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST;
        let (buffer, live) = self.initialised_buffer(label, bytes, usage);
        TrackedBuffer::new(buffer, live)
    }

    /// Creates a buffer, counting it (see [`super::alloc`]).
    pub fn create_buffer(&self, desc: &wgpu::BufferDescriptor<'_>) -> (wgpu::Buffer, LiveBytes) {
        let live = self.allocations.buffer_created(desc.size);
        (self.device.create_buffer(desc), live)
    }

    /// A buffer holding `contents` (a multiple of 4 bytes). Written through the queue rather
    /// than mapped at creation: on a lost device mapping panics inside wgpu, while a queued
    /// write reports an error that the next [`Gpu::wait`] returns.
    fn initialised_buffer(
        &self,
        label: &str,
        contents: &[u8],
        usage: wgpu::BufferUsages,
    ) -> (wgpu::Buffer, LiveBytes) {
        let (buffer, live) = self.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: contents.len() as u64,
            usage: usage | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buffer, 0, contents);
        (buffer, live)
    }

    /// Copies a whole buffer back to the host, waiting for all queued work first.
    pub fn read<T: Pod>(&self, source: &GpuBuffer) -> GpuResult<Vec<T>> {
        let bytes = source.bytes();
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let copy_bytes = padded_size(bytes);
        let mut staging_slot = self.staging.lock().map_err(|_| GpuError::Map {
            label: source.label.clone(),
            message: "staging buffer lock poisoned".into(),
        })?;
        if staging_slot.as_ref().is_none_or(|b| b.size() < copy_bytes) {
            let (buffer, live) = self.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback staging"),
                size: copy_bytes.next_power_of_two(),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            *staging_slot = Some(TrackedBuffer::new(buffer, live));
        }
        let staging = staging_slot
            .as_ref()
            .expect("staging buffer was just created");
        let mut encoder = self
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("readback"),
            });
        encoder.copy_buffer_to_buffer(&source.buffer, 0, staging, 0, copy_bytes);
        self.queue.submit([encoder.finish()]);

        let slice = staging.slice(..copy_bytes);
        let (sender, receiver) = mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |result| {
            let _ = sender.send(result);
        });
        self.wait()?;
        receiver
            .recv()
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(|message| GpuError::Map {
                label: source.label.clone(),
                message: first_line(&message),
            })?;
        let out = {
            let view = slice.get_mapped_range().map_err(|e| GpuError::Map {
                label: source.label.clone(),
                message: e.to_string(),
            })?;
            bytemuck::pod_collect_to_vec::<u8, T>(&view[..bytes as usize])
        };
        staging.unmap();
        Ok(out)
    }
}
