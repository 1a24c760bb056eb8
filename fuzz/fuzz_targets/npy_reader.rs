//! Arbitrary bytes as a NumPy `.npy` file and `.npz` archive: an error or arrays whose every
//! row can be read, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sae_wgpu::data::fuzzing::npy_reader(data));
