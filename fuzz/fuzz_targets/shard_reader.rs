//! Arbitrary bytes as an activation shard: parsing must return an error or a layout whose
//! every row and token can be read without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sae_wgpu::data::fuzzing::shard_reader(data));
