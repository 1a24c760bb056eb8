//! The TopK SAE: host parameters and their file formats, GPU-resident weights and the forward
//! pass, the training step, schedules, initialisation and checkpoints. The training loop (a
//! whole run) is in the job layer above, `run::train`.

pub mod arch;
pub mod blocks;
pub mod checkpoint;
pub mod formats;
pub mod forward;
pub mod init;
pub mod params;
pub mod pass;
pub mod schedule;
pub mod trainer;

pub use forward::{record_forward, ForwardBuffers, GpuSae};
pub use params::SaeParams;
