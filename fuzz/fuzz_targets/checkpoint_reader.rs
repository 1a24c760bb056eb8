//! Arbitrary bytes as a training checkpoint: an error or a checkpoint, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sae_wgpu::sae::checkpoint;

fuzz_target!(|data: &[u8]| {
    let _ = checkpoint::parse(data, Path::new("fuzz-input"));
});
