//! The GPU layer: device and adapter choice, buffers, the shader registry and pipeline cache,
//! and one thin launch wrapper per kernel (in `kernels/`).

pub mod alloc;
pub mod bindings;
pub mod buffers;
pub mod coop;
pub mod device;
pub mod dispatch;
pub mod error;
pub mod kernels;
pub mod params;
pub mod pipeline;
pub mod recorder;
pub mod shaders;
pub mod tune;

pub use alloc::AllocationCounts;
pub use buffers::GpuBuffer;
pub use coop::{CoopConfig, CoopTile, F16Overflow, Matmul, MatmulChoice};
pub use device::{
    list_adapters, AdapterRequest, AdapterSummary, BackendChoice, Gpu, InjectedFault,
};
pub use dispatch::Grid;
pub use error::{GpuError, GpuResult};
pub use pipeline::PipelineKey;
pub use recorder::{LaunchCache, Recorder};
pub use shaders::{InputPrecision, Shader};
