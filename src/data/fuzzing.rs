//! What the fuzz targets (fuzz/fuzz_targets/) and their replay test (tests/fuzz_regressions.rs)
//! run on arbitrary bytes: parse as a reader would, then read every row and token of whatever
//! parsed. Each must return, never panic.

use std::path::Path;

use arrow_buffer::Buffer;

use super::arrow::ArrowLayout;
use super::npy::{npz_members, NpyArray, NpyElement};
use super::shard::{ShardLayout, DEFAULT_TENSOR};

const PATH: &str = "fuzz-input";

/// Bytes as a safetensors shard.
pub fn shard_reader(data: &[u8]) {
    if let Ok(layout) = ShardLayout::parse(data, DEFAULT_TENSOR, Path::new(PATH)) {
        read_all(&layout, data);
    }
}

fn read_all(layout: &ShardLayout, data: &[u8]) {
    let mut row = vec![0.0f32; layout.d_in];
    for r in 0..layout.rows {
        layout.read_rows(data, r, &mut row);
        let _ = layout.token(data, r);
    }
}

fn read_array(array: &NpyArray, data: &[u8]) {
    if let Ok((rows, d_in, dtype)) = array.activations(Path::new(PATH), "array") {
        let layout = ShardLayout {
            rows,
            d_in,
            dtype,
            data_offset: array.data_offset,
            tokens_offset: None,
        };
        read_all(&layout, data);
    }
    if array.element == NpyElement::I32 {
        let _ = array.check_tokens(Path::new(PATH), array.shape.first().copied().unwrap_or(0));
    }
}

/// Bytes as an `.npy` file and as an `.npz` archive.
pub fn npy_reader(data: &[u8]) {
    if let Ok(array) = NpyArray::parse(data, 0, Path::new(PATH)) {
        read_array(&array, data);
    }
    if let Ok(members) = npz_members(data, Path::new(PATH)) {
        for array in members.iter().filter_map(|(_, a)| a.as_ref().ok()) {
            read_array(array, data);
        }
    }
}

/// Bytes as one Arrow file of a SAELens activation cache.
pub fn arrow_reader(data: &[u8]) {
    let buffer = Buffer::from(data.to_vec());
    if let Ok(layout) = ArrowLayout::parse(&buffer, DEFAULT_TENSOR, DEFAULT_TENSOR, Path::new(PATH))
    {
        let mut row = vec![0.0f32; layout.d_in];
        for r in 0..layout.rows {
            layout.read_rows(buffer.as_slice(), r, &mut row);
            let _ = layout.token(buffer.as_slice(), r);
        }
    }
}
