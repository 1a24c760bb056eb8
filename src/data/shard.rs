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

pub struct Shard {
    pub path: PathBuf,
    /// Name of the activation tensor read.
    pub tensor: String,
    mmap: Mmap,
    pub rows: usize,
    pub d_in: usize,
    pub dtype: ActDtype,
    /// Byte offset of the activation data in the file.
    data_offset: usize,
    /// Byte offset of the `tokens` data, when present.
    tokens_offset: Option<usize>,
}

impl Shard {
    /// Opens and validates a shard: the tensor exists, has rank 2 (or 3 with a middle 1), a
    /// float dtype, and lies within the file; `tokens`, if present, is int32 `[n]`.
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
        let (rows, d_in, dtype, data_offset, tokens_offset) = {
            let st = SafeTensors::deserialize(&mmap).map_err(|e| DataError::Format {
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
            let data_offset = view.data().as_ptr() as usize - mmap.as_ptr() as usize;
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
                    Some(tokens.data().as_ptr() as usize - mmap.as_ptr() as usize)
                }
            };
            (rows, d_in, dtype, data_offset, tokens_offset)
        };
        Ok(Shard {
            path: path.to_path_buf(),
            tensor: tensor.to_string(),
            mmap,
            rows,
            d_in,
            dtype,
            data_offset,
            tokens_offset,
        })
    }

    pub fn info(&self) -> ShardInfo {
        ShardInfo {
            path: self.path.display().to_string(),
            rows: self.rows,
            d_in: self.d_in,
            dtype: self.dtype,
            bytes: self.mmap.len() as u64,
            has_tokens: self.tokens_offset.is_some(),
        }
    }

    pub fn has_tokens(&self) -> bool {
        self.tokens_offset.is_some()
    }

    /// Converts rows `start..start + out.len() / d_in` to f32 into `out`.
    pub fn read_rows(&self, start: usize, out: &mut [f32]) {
        let row_bytes = self.d_in * self.dtype.bytes();
        let count = out.len() / self.d_in;
        let begin = self.data_offset + start * row_bytes;
        let bytes = &self.mmap[begin..begin + count * row_bytes];
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
    pub fn token(&self, row: usize) -> Option<i32> {
        self.tokens_offset.map(|offset| {
            let at = offset + row * 4;
            i32::from_le_bytes([
                self.mmap[at],
                self.mmap[at + 1],
                self.mmap[at + 2],
                self.mmap[at + 3],
            ])
        })
    }
}
