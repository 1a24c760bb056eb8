//! Arbitrary bytes as one Arrow file of a SAELens activation cache: an error or a layout whose
//! every row and token id can be read, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sae_wgpu::data::fuzzing::arrow_reader(data));
