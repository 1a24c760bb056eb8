//! Adapter discovery and selection, device creation with the adapter's real limits, and the
//! error plumbing that turns wgpu's asynchronous errors into values.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::alloc::{Allocations, TrackedBuffer};
use super::coop::{self, CoopConfig, CoopTile, Matmul, MatmulChoice};
use super::error::{first_line, GpuError, GpuResult};
use super::pipeline::PipelineCache;

/// Which graphics API to go through. `None` in [`AdapterRequest`] means "any primary one".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    Vulkan,
    Metal,
    Dx12,
    Gl,
}

impl crate::choice::Choice for BackendChoice {
    const CHOICES: &'static [(&'static str, Self, &'static str)] = &[
        ("vulkan", BackendChoice::Vulkan, "Vulkan"),
        ("metal", BackendChoice::Metal, "Metal"),
        ("dx12", BackendChoice::Dx12, "DirectX 12"),
        ("gl", BackendChoice::Gl, "OpenGL (ES)"),
    ];
}

impl BackendChoice {
    fn backends(self) -> wgpu::Backends {
        match self {
            BackendChoice::Vulkan => wgpu::Backends::VULKAN,
            BackendChoice::Metal => wgpu::Backends::METAL,
            BackendChoice::Dx12 => wgpu::Backends::DX12,
            BackendChoice::Gl => wgpu::Backends::GL,
        }
    }
}

/// What the user asked for: an adapter by name (case-insensitive substring) or by index in
/// the `sae adapters` listing, and optionally a backend.
#[derive(Clone, Debug, Default)]
pub struct AdapterRequest {
    pub adapter: Option<String>,
    pub backend: Option<BackendChoice>,
    /// Caps the storage-buffer binding size below the adapter's, so tests can exercise the
    /// split-dictionary paths on small shapes.
    pub max_binding_override: Option<u64>,
}

/// Optional features we use when the adapter has them and work without otherwise.
pub const OPTIONAL_FEATURES: [(wgpu::Features, &str); 4] = [
    (wgpu::Features::SHADER_F16, "SHADER_F16"),
    (wgpu::Features::SUBGROUP, "SUBGROUP"),
    (wgpu::Features::TIMESTAMP_QUERY, "TIMESTAMP_QUERY"),
    (
        wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
        "TIMESTAMP_QUERY_INSIDE_PASSES",
    ),
];

/// Device faults a test can provoke; see [`Gpu::inject_fault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectedFault {
    DeviceLost,
    OutOfMemory,
}

impl InjectedFault {
    /// Parses `device-lost@STEP` or `out-of-memory@STEP` (the fault hits before step STEP).
    pub fn parse(text: &str) -> Option<(InjectedFault, u64)> {
        let (kind, step) = text.split_once('@')?;
        let fault = match kind {
            "device-lost" => InjectedFault::DeviceLost,
            "out-of-memory" => InjectedFault::OutOfMemory,
            _ => return None,
        };
        Some((fault, step.parse().ok()?))
    }
}

/// The facts about an adapter that a user (and a benchmark line) needs.
#[derive(Clone, Debug, Serialize)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub vendor_id: u32,
    pub device_id: u32,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_compute_workgroups_per_dimension: u32,
    pub max_storage_buffers_per_shader_stage: u32,
    /// Invocations per subgroup, smallest and largest.
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    /// The matrix shapes and types its cooperative matrices run (empty without them).
    pub cooperative_matrices: Vec<CoopConfig>,
    /// Bytes in the adapter's device-local memory heaps, where the backend reports them
    /// (Vulkan); `None` elsewhere.
    pub device_memory_bytes: Option<u64>,
    pub features: Vec<&'static str>,
}

impl AdapterSummary {
    fn new(index: usize, adapter: &wgpu::Adapter) -> Self {
        let info = adapter.get_info();
        let limits = adapter.limits();
        let features = adapter.features();
        AdapterSummary {
            index,
            name: info.name,
            backend: format!("{:?}", info.backend).to_lowercase(),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver,
            driver_info: info.driver_info,
            vendor_id: info.vendor,
            device_id: info.device,
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            max_compute_workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            max_storage_buffers_per_shader_stage: limits.max_storage_buffers_per_shader_stage,
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            cooperative_matrices: coop::configs(adapter),
            device_memory_bytes: device_memory(adapter),
            // The experimental feature is listed but requested only by `coop_layout`'s rule.
            features: OPTIONAL_FEATURES
                .iter()
                .chain([&(
                    wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX,
                    "EXPERIMENTAL_COOPERATIVE_MATRIX",
                )])
                .filter(|(flag, _)| features.contains(*flag))
                .map(|(_, name)| *name)
                .collect(),
        }
    }
}

/// Total size of the adapter's device-local memory heaps, read through Vulkan: wgpu has no
/// portable query. On integrated GPUs and CPU drivers this is (part of) system memory.
#[cfg(not(target_arch = "wasm32"))]
fn device_memory(adapter: &wgpu::Adapter) -> Option<u64> {
    use ash::vk::MemoryHeapFlags;
    // SAFETY: `as_hal` hands out the Vulkan adapter behind `adapter` (or None on another
    // backend); it only answers a read-only query and is dropped before this returns.
    let hal = unsafe { adapter.as_hal::<wgpu::hal::api::Vulkan>() }?;
    let instance = hal.shared_instance().raw_instance();
    // SAFETY: a valid physical device of this instance, queried for plain data.
    let props =
        unsafe { instance.get_physical_device_memory_properties(hal.raw_physical_device()) };
    let heaps =
        &props.memory_heaps[..(props.memory_heap_count as usize).min(props.memory_heaps.len())];
    let total: u64 = heaps
        .iter()
        .filter(|heap| heap.flags.contains(MemoryHeapFlags::DEVICE_LOCAL))
        .map(|heap| heap.size)
        .sum();
    (total > 0).then_some(total)
}

#[cfg(target_arch = "wasm32")]
fn device_memory(_adapter: &wgpu::Adapter) -> Option<u64> {
    None
}

fn make_instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = backends;
    // Validation layers are rarely installed and only add noise for users; WGPU_* env vars
    // still turn them on for debugging.
    desc.flags = wgpu::InstanceFlags::empty();
    wgpu::Instance::new(desc.with_env())
}

fn requested_backends(backend: Option<BackendChoice>) -> wgpu::Backends {
    backend.map_or(wgpu::Backends::PRIMARY, BackendChoice::backends)
}

/// Every adapter wgpu sees for the requested backend (all primary backends by default,
/// falling back to GL when none of those has one).
pub fn enumerate_adapters(backend: Option<BackendChoice>) -> Vec<wgpu::Adapter> {
    let adapters = pollster::block_on(
        make_instance(requested_backends(backend)).enumerate_adapters(requested_backends(backend)),
    );
    if adapters.is_empty() && backend.is_none() {
        return pollster::block_on(
            make_instance(wgpu::Backends::GL).enumerate_adapters(wgpu::Backends::GL),
        );
    }
    adapters
}

pub fn list_adapters(backend: Option<BackendChoice>) -> Vec<AdapterSummary> {
    enumerate_adapters(backend)
        .iter()
        .enumerate()
        .map(|(index, adapter)| AdapterSummary::new(index, adapter))
        .collect()
}

/// The f16 encoder's layout when the adapter's cooperative matrices run f16 × f16 → f32 and
/// it has the f16 arithmetic and subgroups the shader needs; `SAE_NO_COOP=1` leaves them off.
fn coop_layout(adapter: &wgpu::Adapter, features: wgpu::Features) -> Option<CoopTile> {
    let off = std::env::var("SAE_NO_COOP").is_ok_and(|v| !v.is_empty() && v != "0");
    let needs = wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP;
    let offered = adapter
        .features()
        .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);
    if off || !offered || !features.contains(needs) {
        return None;
    }
    let edge = coop::f16_tile(&coop::configs(adapter))?;
    let info = adapter.get_info();
    Some(CoopTile::new(
        edge,
        info.subgroup_min_size,
        info.subgroup_max_size,
    ))
}

/// Lower is better: real GPUs before software rasterisers; native APIs before GL.
fn preference(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let api = u8::from(info.backend == wgpu::Backend::Gl);
    (kind, api)
}

fn choose_adapter(request: &AdapterRequest) -> GpuResult<wgpu::Adapter> {
    let mut adapters = enumerate_adapters(request.backend);
    if adapters.is_empty() {
        let looked_for = match request.backend {
            Some(backend) => format!("backend {backend:?}"),
            None => "Vulkan, Metal, DX12 and GL backends".to_string(),
        };
        return Err(GpuError::NoAdapter { looked_for });
    }
    match request
        .adapter
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => {
            adapters.sort_by_key(|adapter| preference(&adapter.get_info()));
            Ok(adapters.swap_remove(0))
        }
        Some(wanted) => {
            if let Ok(index) = wanted.parse::<usize>() {
                if index < adapters.len() {
                    return Ok(adapters.swap_remove(index));
                }
            }
            let needle = wanted.to_lowercase();
            match adapters
                .iter()
                .position(|adapter| adapter.get_info().name.to_lowercase().contains(&needle))
            {
                Some(position) => Ok(adapters.swap_remove(position)),
                None => Err(GpuError::AdapterNotFound {
                    wanted: wanted.to_string(),
                    available: adapters
                        .iter()
                        .enumerate()
                        .map(|(i, a)| format!("{i}: {}", a.get_info().name))
                        .collect::<Vec<_>>()
                        .join(", "),
                }),
            }
        }
    }
}

/// An open device with everything needed to compile and launch our kernels.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub summary: AdapterSummary,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// The f16 encoder GEMM's layout on the matrix units, when the adapter has them.
    pub coop: Option<CoopTile>,
    pub pipelines: PipelineCache,
    /// Reused by [`Gpu::read`]; grows to the largest readback.
    pub(crate) staging: Mutex<Option<TrackedBuffer>>,
    /// What the GPU layer has created (buffers, bind groups, live bytes).
    pub allocations: Arc<Allocations>,
    /// The first error wgpu reported outside an error scope since the last check.
    uncaptured: Arc<Mutex<Option<GpuError>>>,
    /// Set when the device is lost; reported before `uncaptured` (whose errors it causes).
    lost: Arc<Mutex<Option<GpuError>>>,
}

impl Gpu {
    pub fn new(request: &AdapterRequest) -> GpuResult<Gpu> {
        let adapter = choose_adapter(request)?;
        let info = adapter.get_info();
        let summary = AdapterSummary::new(0, &adapter);
        let available = adapter.features();
        let wanted = OPTIONAL_FEATURES
            .iter()
            .fold(wgpu::Features::empty(), |acc, (flag, _)| acc | *flag);
        let mut features = available & wanted;
        let coop = coop_layout(&adapter, features);
        if coop.is_some() {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        let mut limits = adapter.limits();
        if let Some(cap) = request.max_binding_override {
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(cap);
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("sae-wgpu"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: if coop.is_some() {
                // SAFETY: wgpu asks callers of experimental features to accept that they may
                // have bugs; we use only the cooperative-matrix operations, in one shader whose
                // results are tested against an f64 reference, and never by default on an
                // adapter without them.
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            } else {
                wgpu::ExperimentalFeatures::disabled()
            },
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|source| GpuError::RequestDevice {
            adapter: info.name.clone(),
            source,
        })?;

        let uncaptured: Arc<Mutex<Option<GpuError>>> = Arc::new(Mutex::new(None));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |error: wgpu::Error| {
            // The first error is returned by the next `wait`; once a device is lost, every
            // command after it fails too, so the rest only go to the debug log.
            tracing::debug!("wgpu: {}", first_line(&error.to_string()));
            if let Ok(mut slot) = sink.lock() {
                slot.get_or_insert_with(|| GpuError::from_wgpu("a GPU command", error));
            }
        }));
        let lost: Arc<Mutex<Option<GpuError>>> = Arc::new(Mutex::new(None));
        let lost_sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            // Also on `Destroyed`: a device destroyed while in use is lost to the run all the
            // same (nothing reads the slot once a `Gpu` is dropped).
            if let Ok(mut slot) = lost_sink.lock() {
                let message = first_line(&message);
                slot.get_or_insert(GpuError::DeviceLost(if message.is_empty() {
                    format!("{reason:?}")
                } else {
                    format!("{reason:?}: {message}")
                }));
            }
        });
        tracing::info!(
            adapter = %info.name,
            backend = ?info.backend,
            driver = %info.driver,
            "opened GPU device"
        );
        let limits = device.limits();
        Ok(Gpu {
            device,
            queue,
            info,
            summary,
            limits,
            features,
            coop,
            pipelines: PipelineCache::default(),
            staging: Mutex::new(None),
            allocations: Arc::default(),
            uncaptured,
            lost,
        })
    }

    /// How the dense products run for `choice` on this adapter; f16 without cooperative
    /// matrices is an error naming what is missing.
    pub fn matmul(&self, choice: MatmulChoice) -> GpuResult<Matmul> {
        Matmul::resolve(choice, self.coop, &self.info.name)
    }

    pub fn has_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// A one-line description for logs and benchmark records.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            self.info.name,
            self.info.backend,
            self.info.device_type,
            self.info.driver,
            self.info.driver_info
        )
    }

    /// Blocks until all submitted work is done, then reports any error wgpu raised meanwhile.
    pub fn wait(&self) -> GpuResult<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::DeviceLost(first_line(&e.to_string())))?;
        self.take_error()
    }

    /// Returns (and clears) the first asynchronous error since the last call.
    pub fn take_error(&self) -> GpuResult<()> {
        let take = |slot: &Mutex<Option<GpuError>>| slot.lock().ok().and_then(|mut s| s.take());
        let other = take(&self.uncaptured);
        if other.is_some() {
            // wgpu reports a loss once the queue has drained: wait for that, so a loss is named
            // as such rather than as the invalid-buffer errors it causes.
            let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        }
        let lost = take(&self.lost);
        match lost.or(other) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// The most bytes one storage buffer can hold and still be bound whole.
    pub fn binding_limit(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Makes the device fail the way a real fault would, for tests of what a run does then
    /// (`SAE_INJECT_FAULT`, read by `sae train`).
    pub fn inject_fault(&self, fault: InjectedFault) {
        match fault {
            // A real loss: every later command on this device fails.
            InjectedFault::DeviceLost => self.device.destroy(),
            // What wgpu reports when an allocation or submission runs out of memory.
            InjectedFault::OutOfMemory => {
                if let Ok(mut slot) = self.uncaptured.lock() {
                    slot.get_or_insert(GpuError::OutOfMemory {
                        context: "a GPU command (injected fault)".to_string(),
                    });
                }
            }
        }
    }

    /// Fails when `needed` bytes exceed the adapter's memory (where the backend reports it).
    pub fn check_memory(&self, what: &str, needed: u64) -> GpuResult<()> {
        match self.summary.device_memory_bytes {
            Some(available) if needed > available => Err(GpuError::Memory {
                what: what.to_string(),
                needed_mib: needed >> 20,
                available_mib: available >> 20,
                adapter: self.info.name.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Checks that a buffer of `bytes` can be bound as one storage binding.
    pub fn check_binding(&self, what: &str, bytes: u64) -> GpuResult<()> {
        let limit = self.binding_limit();
        if bytes > limit {
            return Err(GpuError::Limit {
                what: what.to_string(),
                needed: bytes,
                limit,
                limit_name: "max_storage_buffer_binding_size",
            });
        }
        Ok(())
    }
}
