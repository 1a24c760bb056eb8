//! Arbitrary bytes as an activation shard: parsing must return an error or a layout whose
//! every row and token can be read without panicking.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sae_wgpu::data::ShardLayout;

fuzz_target!(|data: &[u8]| {
    if let Ok(layout) = ShardLayout::parse(data, "activations", Path::new("fuzz-input")) {
        let mut row = vec![0.0f32; layout.d_in];
        for r in 0..layout.rows {
            layout.read_rows(data, r, &mut row);
            let _ = layout.token(data, r);
        }
    }
});
