//! sae-wgpu: train and analyse sparse autoencoders on any GPU, with every heavy kernel in WGSL
//! run through wgpu (Vulkan, Metal, DX12, GL).

pub mod analysis;
pub mod bench;
pub mod choice;
pub mod cli;
pub mod data;
pub mod gpu;
pub mod io;
pub mod run;
pub mod sae;
