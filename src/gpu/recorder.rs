//! Records labelled dispatches into one command encoder and submits them together, so a whole
//! training step is one submit. Optionally brackets each dispatch with GPU timestamps.

use super::buffers::GpuBuffer;
use super::device::Gpu;
use super::dispatch::Grid;
use super::error::GpuResult;
use super::pipeline::PipelineKey;

/// Per-dispatch GPU timestamps, used by benchmarks.
pub struct Timestamps {
    query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    capacity: u32,
    used: u32,
    labels: Vec<String>,
}

pub struct Recorder<'g> {
    gpu: &'g Gpu,
    encoder: wgpu::CommandEncoder,
    timestamps: Option<Timestamps>,
}

impl<'g> Recorder<'g> {
    pub fn new(gpu: &'g Gpu, label: &str) -> Self {
        let encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        Recorder {
            gpu,
            encoder,
            timestamps: None,
        }
    }

    /// A recorder that writes a timestamp before and after each of up to `dispatches`
    /// dispatches. Falls back to no timing when the adapter lacks TIMESTAMP_QUERY.
    pub fn timed(gpu: &'g Gpu, label: &str, dispatches: u32) -> Self {
        let mut recorder = Recorder::new(gpu, label);
        if gpu.has_timestamps() && dispatches > 0 {
            let capacity = dispatches * 2;
            recorder.timestamps = Some(Timestamps {
                query_set: gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("kernel timestamps"),
                    ty: wgpu::QueryType::Timestamp,
                    count: capacity,
                }),
                resolve: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("timestamp resolve"),
                    size: u64::from(capacity) * 8,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
                capacity,
                used: 0,
                labels: Vec::new(),
            });
        }
        recorder
    }

    /// How many dispatches have been recorded with timestamps so far.
    pub fn timed_dispatches(&self) -> usize {
        self.timestamps.as_ref().map_or(0, |ts| ts.labels.len())
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// Records one dispatch. `bindings` are (binding index, resource) in group 0; the layout
    /// comes from the pipeline itself.
    pub fn dispatch(
        &mut self,
        label: &str,
        pipeline: &wgpu::ComputePipeline,
        bindings: &[(u32, wgpu::BindingResource<'_>)],
        grid: Grid,
    ) {
        if grid.workgroups() == 0 {
            return;
        }
        let layout = pipeline.get_bind_group_layout(0);
        let entries: Vec<wgpu::BindGroupEntry<'_>> = bindings
            .iter()
            .map(|(binding, resource)| wgpu::BindGroupEntry {
                binding: *binding,
                resource: resource.clone(),
            })
            .collect();
        let bind_group = self
            .gpu
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout: &layout,
                entries: &entries,
            });
        let timestamp_writes = match self.timestamps.as_mut() {
            Some(ts) if ts.used + 2 <= ts.capacity => {
                let begin = ts.used;
                ts.used += 2;
                ts.labels.push(label.to_string());
                Some(wgpu::ComputePassTimestampWrites {
                    query_set: &ts.query_set,
                    beginning_of_pass_write_index: Some(begin),
                    end_of_pass_write_index: Some(begin + 1),
                })
            }
            _ => None,
        };
        let mut pass = self
            .encoder
            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(label),
                timestamp_writes,
            });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(grid.x, grid.y, grid.z);
    }

    /// Compiles (once) the pipeline for `key`, uploads `params` as binding 0 and dispatches with
    /// `buffers` at their binding indices. The common path of every `launch_*` wrapper.
    pub fn launch<P: bytemuck::Pod>(
        &mut self,
        key: &PipelineKey,
        params: &P,
        buffers: &[(u32, &GpuBuffer)],
        grid: Grid,
    ) -> GpuResult<()> {
        let pipeline = self.gpu.pipelines.get(self.gpu, key)?;
        let label = format!("{}::{}", key.shader.name(), key.entry);
        let uniform = self.gpu.uniform(&label, params);
        let mut bindings = Vec::with_capacity(buffers.len() + 1);
        bindings.push((0, uniform.as_entire_binding()));
        bindings.extend(buffers.iter().map(|(i, b)| (*i, b.binding())));
        self.dispatch(&label, &pipeline, &bindings, grid);
        Ok(())
    }

    /// One invocation per item: `items` over workgroups of `workgroup`, folded within the
    /// adapter's per-dimension limit (see [`Grid::linear`]).
    pub fn threads_grid(&self, items: usize, workgroup: u32) -> Grid {
        Grid::linear(
            items.div_ceil(workgroup as usize) as u64,
            self.gpu.limits.max_compute_workgroups_per_dimension,
        )
    }

    /// Zeroes a buffer (e.g. counters before an atomic pass).
    pub fn clear(&mut self, buffer: &GpuBuffer) {
        self.encoder.clear_buffer(&buffer.buffer, 0, None);
    }

    pub fn copy(&mut self, source: &GpuBuffer, destination: &GpuBuffer) {
        let bytes = source.buffer.size().min(destination.buffer.size());
        self.encoder
            .copy_buffer_to_buffer(&source.buffer, 0, &destination.buffer, 0, bytes);
    }

    /// Submits everything recorded so far without waiting.
    pub fn submit(self) -> GpuResult<()> {
        let Recorder {
            gpu,
            mut encoder,
            timestamps,
        } = self;
        if let Some(ts) = &timestamps {
            encoder.resolve_query_set(&ts.query_set, 0..ts.used, &ts.resolve, 0);
        }
        gpu.queue.submit([encoder.finish()]);
        gpu.take_error()
    }

    /// Submits, waits, and returns each timed dispatch's duration in milliseconds (empty when
    /// the adapter has no timestamp queries).
    pub fn submit_timed(self) -> GpuResult<Vec<(String, f64)>> {
        let gpu = self.gpu;
        let Recorder {
            mut encoder,
            timestamps,
            ..
        } = self;
        let Some(ts) = timestamps else {
            gpu.queue.submit([encoder.finish()]);
            gpu.wait()?;
            return Ok(Vec::new());
        };
        encoder.resolve_query_set(&ts.query_set, 0..ts.used, &ts.resolve, 0);
        let readback = gpu.storage::<u64>("timestamps", ts.used as usize)?;
        encoder.copy_buffer_to_buffer(&ts.resolve, 0, &readback.buffer, 0, u64::from(ts.used) * 8);
        gpu.queue.submit([encoder.finish()]);
        let ticks: Vec<u64> = gpu.read(&readback)?;
        let period_ns = f64::from(gpu.queue.get_timestamp_period());
        Ok(ts
            .labels
            .into_iter()
            .enumerate()
            .map(|(i, label)| {
                let elapsed = ticks[2 * i + 1].saturating_sub(ticks[2 * i]);
                (label, elapsed as f64 * period_ns / 1e6)
            })
            .collect())
    }
}
