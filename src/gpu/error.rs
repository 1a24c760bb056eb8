//! Errors raised by the GPU layer. Every variant carries enough context to be printed as one
//! line that tells the user what went wrong and where.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum GpuError {
    #[error(
        "no GPU adapter found ({looked_for}); on headless Linux `apt-get install mesa-vulkan-drivers` gives a CPU Vulkan driver (lavapipe)"
    )]
    NoAdapter { looked_for: String },

    #[error("adapter '{wanted}' not found; available: {available}")]
    AdapterNotFound { wanted: String, available: String },

    #[error("could not open device on adapter '{adapter}': {source}")]
    RequestDevice {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },

    #[error("kernel '{kernel}' failed to compile: {message}")]
    Compile { kernel: String, message: String },

    #[error("GPU validation error in {context}: {message}")]
    Validation { context: String, message: String },

    #[error("GPU out of memory in {context}; try a smaller --batch-size or dictionary")]
    OutOfMemory { context: String },

    #[error(
        "{what} needs about {needed_mib} MiB of GPU memory but '{adapter}' has {available_mib} MiB; use a smaller dictionary (--d-sae / --expansion-factor) or --batch-size"
    )]
    Memory {
        what: String,
        needed_mib: u64,
        available_mib: u64,
        adapter: String,
    },

    #[error("GPU device lost: {0}")]
    DeviceLost(String),

    #[error("reading back '{label}' from the GPU failed: {message}")]
    Map { label: String, message: String },

    #[error(
        "{what} needs {needed} bytes but the adapter allows at most {limit} bytes ({limit_name})"
    )]
    Limit {
        what: String,
        needed: u64,
        limit: u64,
        limit_name: &'static str,
    },

    #[error("{what}: {message}")]
    Unsupported { what: String, message: String },

    #[error("kernel '{kernel}': {message}")]
    Shape {
        kernel: &'static str,
        message: String,
    },
}

pub type GpuResult<T> = Result<T, GpuError>;

impl GpuError {
    /// Turns a wgpu error caught in an error scope into our error type.
    pub fn from_wgpu(context: &str, error: wgpu::Error) -> Self {
        match error {
            wgpu::Error::OutOfMemory { .. } => GpuError::OutOfMemory {
                context: context.to_string(),
            },
            other => GpuError::Validation {
                context: context.to_string(),
                message: first_line(&other.to_string()),
            },
        }
    }
}

/// wgpu error messages span many lines; our errors are one line.
pub(crate) fn first_line(text: &str) -> String {
    text.split('\n')
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A shape check that returns a `GpuError::Shape` instead of panicking.
pub(crate) fn ensure(
    condition: bool,
    kernel: &'static str,
    message: impl FnOnce() -> String,
) -> GpuResult<()> {
    if condition {
        Ok(())
    } else {
        Err(GpuError::Shape {
            kernel,
            message: message(),
        })
    }
}
