//! One safetensors shard of activations `[n, d]` (or `[n, 1, d]`) in f32, f16 or bf16, with
//! optional `tokens [n]` int32. The file is memory-mapped; rows are converted on demand.

use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::Serialize;

use super::error::DataError;

/// Element type of an activation tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActDtype {
    F32,
    F16,
    Bf16,
}

impl ActDtype {
    pub fn bytes(self) -> usize {
        match self {
            ActDtype::F32 => 4,
            ActDtype::F16 | ActDtype::Bf16 => 2,
        }
    }
}

/// What `config.json` records about each input file.
#[derive(Clone, Debug, Serialize)]
pub struct ShardInfo {
    pub path: String,
    pub rows: usize,
    pub d_in: usize,
    pub dtype: ActDtype,
    pub bytes: u64,
    pub has_tokens: bool,
}

/// Where a validated shard's tensors lie within its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardLayout {
    pub rows: usize,
    pub d_in: usize,
    pub dtype: ActDtype,
    /// Byte offset of the activation data.
    pub data_offset: usize,
    /// Byte offset of the `tokens` data, when present.
    pub tokens_offset: Option<usize>,
}

impl ShardLayout {
    /// Validates a shard's bytes: the tensor exists, has rank 2 (or 3 with a middle 1), a float
    /// dtype, and lies within the file; `tokens`, if present, is int32 `[n]`. `path` only
    /// names the file in errors. This is the function the fuzz target drives.
    pub fn parse(bytes: &[u8], tensor: &str, path: &Path) -> Result<ShardLayout, DataError> {
        if bytes.len() < 8 {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                message: format!(
                    "file is {} bytes, shorter than the 8-byte header length",
                    bytes.len()
                ),
            });
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| DataError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let names: Vec<String> = st.names().into_iter().map(String::from).collect();
        let view = st.tensor(tensor).map_err(|_| {
            DataError::tensor(
                path,
                format!(
                    "no tensor named '{tensor}' (found: {}); choose one with --tensor",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            )
        })?;
        let dtype = match view.dtype() {
            Dtype::F32 => ActDtype::F32,
            Dtype::F16 => ActDtype::F16,
            Dtype::BF16 => ActDtype::Bf16,
            other => {
                return Err(DataError::tensor(
                    path,
                    format!("tensor '{tensor}' has dtype {other:?}; expected F32, F16 or BF16"),
                ))
            }
        };
        let (rows, d_in) = match view.shape() {
            [n, d] => (*n, *d),
            [n, 1, d] => (*n, *d),
            shape => {
                return Err(DataError::tensor(
                    path,
                    format!("tensor '{tensor}' has shape {shape:?}; expected [n_tokens, d_in] or [n_tokens, 1, d_in]"),
                ))
            }
        };
        if rows == 0 || d_in == 0 {
            return Err(DataError::tensor(
                path,
                format!("tensor '{tensor}' is empty (shape {:?})", view.shape()),
            ));
        }
        let offset_of = |data: &[u8]| data.as_ptr() as usize - bytes.as_ptr() as usize;
        let data_offset = offset_of(view.data());
        let tokens_offset = match st.tensor("tokens") {
            Err(_) => None,
            Ok(tokens) => {
                if tokens.dtype() != Dtype::I32 || tokens.shape() != [rows] {
                    return Err(DataError::tensor(
                        path,
                        format!(
                            "tensor 'tokens' is {:?} {:?}; expected I32 [{rows}]",
                            tokens.dtype(),
                            tokens.shape()
                        ),
                    ));
                }
                Some(offset_of(tokens.data()))
            }
        };
        Ok(ShardLayout {
            rows,
            d_in,
            dtype,
            data_offset,
            tokens_offset,
        })
    }

    /// Converts rows `start..start + out.len() / d_in` of `bytes` to f32 into `out`.
    pub fn read_rows(&self, bytes: &[u8], start: usize, out: &mut [f32]) {
        let row_bytes = self.d_in * self.dtype.bytes();
        let count = out.len() / self.d_in;
        let begin = self.data_offset + start * row_bytes;
        let bytes = &bytes[begin..begin + count * row_bytes];
        match self.dtype {
            ActDtype::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            ActDtype::F16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            ActDtype::Bf16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = bf16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
        }
    }

    /// Token id of `row`, when the shard has a `tokens` tensor.
    pub fn token(&self, bytes: &[u8], row: usize) -> Option<i32> {
        self.tokens_offset.map(|offset| {
            let at = offset + row * 4;
            i32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        })
    }
}

pub struct Shard {
    pub path: PathBuf,
    /// Name of the activation tensor read.
    pub tensor: String,
    mmap: Mmap,
    pub rows: usize,
    pub d_in: usize,
    pub dtype: ActDtype,
    layout: ShardLayout,
}

impl Shard {
    /// Opens (memory-maps) and validates a shard; see [`ShardLayout::parse`].
    pub fn open(path: &Path, tensor: &str) -> Result<Shard, DataError> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
        if len < 8 {
            return Err(DataError::Format {
                path: path.to_path_buf(),
                message: format!("file is {len} bytes, shorter than the 8-byte header length"),
            });
        }
        // SAFETY: the map is read-only; a file truncated underneath us by another process is
        // outside what any reader can defend against, as for every mmap-based loader.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(path, e))?;
        let layout = ShardLayout::parse(&mmap, tensor, path)?;
        Ok(Shard {
            path: path.to_path_buf(),
            tensor: tensor.to_string(),
            rows: layout.rows,
            d_in: layout.d_in,
            dtype: layout.dtype,
            layout,
            mmap,
        })
    }

    pub fn info(&self) -> ShardInfo {
        ShardInfo {
            path: self.path.display().to_string(),
            rows: self.rows,
            d_in: self.d_in,
            dtype: self.dtype,
            bytes: self.mmap.len() as u64,
            has_tokens: self.layout.tokens_offset.is_some(),
        }
    }

    pub fn has_tokens(&self) -> bool {
        self.layout.tokens_offset.is_some()
    }

    /// Converts rows `start..start + out.len() / d_in` to f32 into `out`.
    pub fn read_rows(&self, start: usize, out: &mut [f32]) {
        self.layout.read_rows(&self.mmap, start, out);
    }

    /// Token id of `row`, when the shard has a `tokens` tensor.
    pub fn token(&self, row: usize) -> Option<i32> {
        self.layout.token(&self.mmap, row)
    }
}
