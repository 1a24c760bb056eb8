//! Records labelled dispatches into one command encoder and submits them together, so a whole
//! training step is one submit. Consecutive dispatches share one compute pass (wgpu still
//! orders each dispatch after the ones whose outputs it reads).
//!
//! A recording made with a [`LaunchCache`] allocates nothing once warm: launch number i of a
//! recording reuses the parameter buffer and bind group that launch number i of an earlier
//! recording created, when it binds the same pipeline and buffers, and rewrites the
//! parameters only when they changed. A training step or an analysis batch is the same list
//! of launches every time, so from the second on it creates no buffer and no bind group.
//!
//! Optionally each dispatch is bracketed with GPU timestamps, grouped by a stage name.

use std::sync::{Arc, Mutex};

use super::alloc::TrackedBuffer;
use super::buffers::GpuBuffer;
use super::device::Gpu;
use super::dispatch::Grid;
use super::error::{GpuError, GpuResult};
use super::pipeline::PipelineKey;

/// Per-dispatch GPU timestamps.
struct Timestamps {
    query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: GpuBuffer,
    capacity: u32,
    used: u32,
    labels: Vec<(&'static str, String)>,
}

impl Timestamps {
    fn new(gpu: &Gpu, dispatches: u32) -> GpuResult<Timestamps> {
        let capacity = dispatches * 2;
        let (resolve, _) = gpu.create_buffer(&wgpu::BufferDescriptor {
            label: Some("timestamp resolve"),
            size: u64::from(capacity) * 8,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        Ok(Timestamps {
            query_set: gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: capacity,
            }),
            resolve,
            readback: gpu.storage::<u64>("timestamps", capacity as usize)?,
            capacity,
            used: 0,
            labels: Vec::new(),
        })
    }
}

/// One launch's parameter buffer and bind group, kept between recordings.
struct CachedLaunch {
    key: PipelineKey,
    pipeline: Arc<wgpu::ComputePipeline>,
    label: String,
    buffers: Vec<(u32, wgpu::Buffer)>,
    params: Vec<u8>,
    uniform: TrackedBuffer,
    bind_group: wgpu::BindGroup,
}

/// How many variants one launch position keeps: a launch that alternates between two input
/// buffers (double-buffered uploads) hits the cache with either.
const VARIANTS: usize = 4;

#[derive(Default)]
struct CacheInner {
    /// Per launch position, the variants seen there (most recent last).
    slots: Vec<Vec<CachedLaunch>>,
    timestamps: Option<Timestamps>,
}

/// Parameter buffers and bind groups of a repeated recording; see the module docs. Cloning
/// gives another handle to the same cache.
#[derive(Clone, Default)]
pub struct LaunchCache {
    inner: Arc<Mutex<CacheInner>>,
}

/// Timed dispatches of one submission: (stage, kernel label, milliseconds).
pub type Timings = Vec<(&'static str, String, f64)>;

pub struct Recorder<'g> {
    gpu: &'g Gpu,
    encoder: wgpu::CommandEncoder,
    pass: Option<wgpu::ComputePass<'static>>,
    /// Timestamps of this recording (bench), owned or borrowed from the cache.
    timestamps: Option<Timestamps>,
    timing: bool,
    cache: Option<LaunchCache>,
    position: usize,
    stage: &'static str,
}

impl<'g> Recorder<'g> {
    pub fn new(gpu: &'g Gpu, label: &str) -> Self {
        let encoder = gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        Recorder {
            gpu,
            encoder,
            pass: None,
            timestamps: None,
            timing: false,
            cache: None,
            position: 0,
            stage: "",
        }
    }

    /// A recorder whose launches reuse (and fill) `cache`.
    pub fn cached(gpu: &'g Gpu, label: &str, cache: &LaunchCache) -> Self {
        let mut recorder = Recorder::new(gpu, label);
        recorder.cache = Some(cache.clone());
        recorder
    }

    /// A recorder that writes a timestamp before and after each of up to `dispatches`
    /// dispatches. Falls back to no timing when the adapter lacks TIMESTAMP_QUERY.
    pub fn timed(gpu: &'g Gpu, label: &str, dispatches: u32) -> GpuResult<Self> {
        let mut recorder = Recorder::new(gpu, label);
        if gpu.has_timestamps() && dispatches > 0 {
            recorder.timestamps = Some(Timestamps::new(gpu, dispatches)?);
            recorder.timing = true;
        }
        Ok(recorder)
    }

    /// As [`Recorder::cached`], timing up to `dispatches` dispatches with timestamps kept in
    /// the cache (allocated by the first timed recording only).
    pub fn cached_timed(
        gpu: &'g Gpu,
        label: &str,
        cache: &LaunchCache,
        dispatches: u32,
    ) -> GpuResult<Self> {
        let mut recorder = Recorder::cached(gpu, label, cache);
        if gpu.has_timestamps() && dispatches > 0 {
            let mut inner = lock(cache)?;
            let reuse = inner
                .timestamps
                .take()
                .filter(|ts| ts.capacity >= dispatches * 2);
            let mut ts = match reuse {
                Some(ts) => ts,
                None => Timestamps::new(gpu, dispatches)?,
            };
            ts.used = 0;
            ts.labels.clear();
            recorder.timestamps = Some(ts);
            recorder.timing = true;
        }
        Ok(recorder)
    }

    /// Names the stage the following dispatches belong to (for timings).
    pub fn stage(&mut self, stage: &'static str) {
        self.stage = stage;
    }

    /// How many dispatches have been recorded with timestamps so far.
    pub fn timed_dispatches(&self) -> usize {
        self.timestamps.as_ref().map_or(0, |ts| ts.labels.len())
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    fn end_pass(&mut self) {
        self.pass = None;
    }

    /// Records one dispatch of `pipeline` with `bind_group`.
    fn dispatch(
        &mut self,
        label: &str,
        pipeline: &wgpu::ComputePipeline,
        bind_group: &wgpu::BindGroup,
        grid: Grid,
    ) {
        let timestamp_writes = match self.timestamps.as_mut() {
            Some(ts) if ts.used + 2 <= ts.capacity => {
                let begin = ts.used;
                ts.used += 2;
                ts.labels.push((self.stage, label.to_string()));
                Some(begin)
            }
            _ => None,
        };
        if timestamp_writes.is_some() || self.timing {
            // Timed dispatches get a pass of their own, bracketed by its timestamps.
            self.end_pass();
            let ts = self.timestamps.as_ref();
            let writes = match (timestamp_writes, ts) {
                (Some(begin), Some(ts)) => Some(wgpu::ComputePassTimestampWrites {
                    query_set: &ts.query_set,
                    beginning_of_pass_write_index: Some(begin),
                    end_of_pass_write_index: Some(begin + 1),
                }),
                _ => None,
            };
            let mut pass = self
                .encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(label),
                    timestamp_writes: writes,
                });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, bind_group, &[]);
            pass.dispatch_workgroups(grid.x, grid.y, grid.z);
            return;
        }
        let encoder = &mut self.encoder;
        let pass = self.pass.get_or_insert_with(|| {
            encoder
                .begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("dispatches"),
                    timestamp_writes: None,
                })
                .forget_lifetime()
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, bind_group, &[]);
        pass.dispatch_workgroups(grid.x, grid.y, grid.z);
    }

    fn bind_group(
        &self,
        label: &str,
        pipeline: &wgpu::ComputePipeline,
        uniform: &wgpu::Buffer,
        buffers: &[(u32, &wgpu::Buffer)],
    ) -> wgpu::BindGroup {
        let layout = pipeline.get_bind_group_layout(0);
        let mut entries = Vec::with_capacity(buffers.len() + 1);
        entries.push(wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        });
        entries.extend(
            buffers
                .iter()
                .map(|(binding, buffer)| wgpu::BindGroupEntry {
                    binding: *binding,
                    resource: buffer.as_entire_binding(),
                }),
        );
        self.gpu.allocations.bind_group_created();
        self.gpu
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(label),
                layout: &layout,
                entries: &entries,
            })
    }

    /// Compiles (once) the pipeline for `key`, passes `params` as binding 0 and dispatches with
    /// `buffers` at their binding indices. The common path of every `launch_*` wrapper.
    pub fn launch<P: bytemuck::Pod>(
        &mut self,
        key: &PipelineKey,
        params: &P,
        buffers: &[(u32, &GpuBuffer)],
        grid: Grid,
    ) -> GpuResult<()> {
        if grid.workgroups() == 0 {
            return Ok(());
        }
        let bytes = bytemuck::bytes_of(params);
        let Some(cache) = self.cache.clone() else {
            let pipeline = self.gpu.pipelines.get(&self.gpu.device, key)?;
            let label = format!("{}::{}", key.shader.name(), key.entry);
            let uniform = self.gpu.uniform(&label, bytes);
            let raw: Vec<(u32, &wgpu::Buffer)> =
                buffers.iter().map(|(i, b)| (*i, &b.buffer)).collect();
            let bind_group = self.bind_group(&label, &pipeline, &uniform, &raw);
            self.dispatch(&label, &pipeline, &bind_group, grid);
            return Ok(());
        };
        let position = self.position;
        self.position += 1;
        let mut inner = lock(&cache)?;
        if inner.slots.len() <= position {
            inner.slots.resize_with(position + 1, Vec::new);
        }
        let same_buffers = |c: &CachedLaunch| {
            c.buffers.len() == buffers.len()
                && c.buffers
                    .iter()
                    .zip(buffers)
                    .all(|((i, a), (j, b))| i == j && *a == b.buffer)
        };
        let found = inner.slots[position]
            .iter()
            .position(|c| c.key == *key && same_buffers(c));
        let hit = match found {
            Some(i) => i,
            None => {
                let pipeline = self.gpu.pipelines.get(&self.gpu.device, key)?;
                let label = format!("{}::{}", key.shader.name(), key.entry);
                let uniform = self.gpu.uniform(&label, bytes);
                let raw: Vec<(u32, &wgpu::Buffer)> =
                    buffers.iter().map(|(i, b)| (*i, &b.buffer)).collect();
                let bind_group = self.bind_group(&label, &pipeline, &uniform, &raw);
                let variants = &mut inner.slots[position];
                if variants.len() == VARIANTS {
                    variants.remove(0);
                }
                variants.push(CachedLaunch {
                    key: key.clone(),
                    pipeline,
                    label,
                    buffers: buffers
                        .iter()
                        .map(|(i, b)| (*i, b.buffer.clone()))
                        .collect(),
                    params: bytes.to_vec(),
                    uniform,
                    bind_group,
                });
                variants.len() - 1
            }
        };
        let launch = &mut inner.slots[position][hit];
        if launch.params != bytes {
            // Queued: runs after earlier submissions have read the old values.
            self.gpu.queue.write_buffer(&launch.uniform, 0, bytes);
            launch.params.clear();
            launch.params.extend_from_slice(bytes);
        }
        let (pipeline, bind_group, label) = (
            launch.pipeline.clone(),
            launch.bind_group.clone(),
            launch.label.clone(),
        );
        drop(inner);
        self.dispatch(&label, &pipeline, &bind_group, grid);
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
        self.end_pass();
        self.encoder.clear_buffer(&buffer.buffer, 0, None);
    }

    pub fn copy(&mut self, source: &GpuBuffer, destination: &GpuBuffer) {
        let bytes = source.buffer.size().min(destination.buffer.size());
        self.copy_range(&source.buffer, &destination.buffer, 0, bytes);
    }

    /// Copies `bytes` from the start of `source` to `offset` in `destination`.
    pub fn copy_range(
        &mut self,
        source: &wgpu::Buffer,
        destination: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
    ) {
        self.end_pass();
        self.encoder
            .copy_buffer_to_buffer(source, 0, destination, offset, bytes);
    }

    /// Finishes the command buffer; the timestamps go back to the cache when it has them.
    fn finish(mut self) -> GpuResult<(wgpu::CommandBuffer, Option<Timestamps>, &'g Gpu)> {
        self.end_pass();
        let Recorder {
            gpu,
            mut encoder,
            timestamps,
            ..
        } = self;
        if let Some(ts) = &timestamps {
            if ts.used > 0 {
                encoder.resolve_query_set(&ts.query_set, 0..ts.used, &ts.resolve, 0);
                encoder.copy_buffer_to_buffer(
                    &ts.resolve,
                    0,
                    &ts.readback.buffer,
                    0,
                    u64::from(ts.used) * 8,
                );
            }
        }
        Ok((encoder.finish(), timestamps, gpu))
    }

    /// Submits everything recorded so far without waiting; returns the submission's index
    /// (for waiting on it later). Timestamps recorded are dropped (see [`Self::submit_timed`]).
    pub fn submit(self) -> GpuResult<wgpu::SubmissionIndex> {
        let cache = self.cache.clone();
        let (commands, timestamps, gpu) = self.finish()?;
        let index = gpu.queue.submit([commands]);
        if let (Some(cache), Some(ts)) = (cache, timestamps) {
            lock(&cache)?.timestamps = Some(ts);
        }
        gpu.take_error()?;
        Ok(index)
    }

    /// Submits, waits, and returns each timed dispatch's (stage, label, milliseconds); empty
    /// when the adapter has no timestamp queries.
    pub fn submit_timed(self) -> GpuResult<Timings> {
        let cache = self.cache.clone();
        let (commands, timestamps, gpu) = self.finish()?;
        gpu.queue.submit([commands]);
        let Some(ts) = timestamps else {
            gpu.wait()?;
            return Ok(Vec::new());
        };
        let ticks: Vec<u64> = if ts.used > 0 {
            gpu.read(&ts.readback)?
        } else {
            gpu.wait()?;
            Vec::new()
        };
        let period_ns = f64::from(gpu.queue.get_timestamp_period());
        let spans = ts
            .labels
            .iter()
            .enumerate()
            .map(|(i, (stage, label))| {
                let elapsed = ticks[2 * i + 1].saturating_sub(ticks[2 * i]);
                (*stage, label.clone(), elapsed as f64 * period_ns / 1e6)
            })
            .collect();
        if let Some(cache) = cache {
            lock(&cache)?.timestamps = Some(ts);
        }
        Ok(spans)
    }
}

fn lock(cache: &LaunchCache) -> GpuResult<std::sync::MutexGuard<'_, CacheInner>> {
    cache.inner.lock().map_err(|_| GpuError::Compile {
        kernel: "launch cache".into(),
        message: "lock poisoned".into(),
    })
}
