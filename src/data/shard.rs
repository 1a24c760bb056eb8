//! One shard of activations `[n, d]` (or `[n, 1, d]`) in f32, f16 or bf16, with optional
//! token ids: a safetensors file (`tokens [n]` int32), a NumPy `.npy` (sibling
//! `*.tokens.npy`) or `.npz` (array `tokens`), or one Arrow file of a SAELens activation
//! cache (`token_ids`). The file is memory-mapped; rows are converted on demand.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;

use arrow_buffer::Buffer;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde::Serialize;

use super::arrow::{declared_shape, ArrowLayout};
use super::dtype::{convert_rows, copy_raw16, ActDtype};
use super::error::DataError;
use super::npy::{npz_members, NpyArray, NpyElement};

/// What `config.json` records about each input file.
#[derive(Clone, Debug, Serialize)]
pub struct ShardInfo {
    pub path: String,
    pub format: ShardFormat,
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
                kind: "safetensors",
                message: format!(
                    "file is {} bytes, shorter than the 8-byte header length",
                    bytes.len()
                ),
            });
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| DataError::Format {
            path: path.to_path_buf(),
            kind: "safetensors",
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
        convert_rows(&bytes[begin..begin + count * row_bytes], self.dtype, out);
    }

    /// Copies rows `start..start + out.len() / d_in` of a 16-bit tensor into `out` as stored.
    pub fn read_raw16(&self, bytes: &[u8], start: usize, out: &mut [u16]) {
        let row_bytes = self.d_in * 2;
        let count = out.len() / self.d_in;
        let begin = self.data_offset + start * row_bytes;
        copy_raw16(&bytes[begin..begin + count * row_bytes], out);
    }

    /// Token id of `row`, when the shard has a `tokens` tensor.
    pub fn token(&self, bytes: &[u8], row: usize) -> Option<i32> {
        self.tokens_offset.map(|offset| {
            let at = offset + row * 4;
            i32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        })
    }
}

/// The file formats a shard can come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardFormat {
    Safetensors,
    Npy,
    Npz,
    /// One `data-*.arrow` file of a SAELens activation cache (a Hugging Face dataset).
    Arrow,
}

impl ShardFormat {
    /// The format a path's extension names (safetensors for anything else).
    pub fn of(path: &Path) -> ShardFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some("npy") => ShardFormat::Npy,
            Some("npz") => ShardFormat::Npz,
            Some("arrow") => ShardFormat::Arrow,
            _ => ShardFormat::Safetensors,
        }
    }
}

/// Where a shard's rows (and token ids) lie in its memory map.
enum Rows {
    /// `[rows, d_in]` from one offset; token ids at `tokens_offset` of `tokens_map` (a sibling
    /// `.tokens.npy`) or of the shard's own map.
    Contiguous {
        layout: ShardLayout,
        tokens_map: Option<Mmap>,
    },
    Arrow(ArrowLayout),
}

pub struct Shard {
    pub path: PathBuf,
    /// Name of the activation tensor (or cache column) read.
    pub tensor: String,
    pub format: ShardFormat,
    map: Arc<Mmap>,
    pub rows: usize,
    pub d_in: usize,
    pub dtype: ActDtype,
    rows_at: Rows,
}

/// The tensor name commands use unless told otherwise; NumPy archives and Arrow caches
/// without such an array take their only one instead.
pub const DEFAULT_TENSOR: &str = "activations";

/// Memory-maps a whole file, refusing one too short to hold anything.
pub(crate) fn map_file(path: &Path, at_least: u64) -> Result<Mmap, DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = file.metadata().map_err(|e| DataError::io(path, e))?.len();
    if len < at_least {
        return Err(DataError::Format {
            path: path.to_path_buf(),
            kind: match ShardFormat::of(path) {
                ShardFormat::Safetensors => "safetensors",
                ShardFormat::Npy | ShardFormat::Npz => "NumPy",
                ShardFormat::Arrow => "Arrow",
            },
            message: format!("file is {len} bytes, too short to hold a header"),
        });
    }
    // SAFETY: the map is read-only; a file truncated underneath us by another process is
    // outside what any reader can defend against, as for every mmap-based loader.
    unsafe { Mmap::map(&file) }.map_err(|e| DataError::io(path, e))
}

/// `dir/name.tokens.npy` for `dir/name.npy`.
pub fn npy_tokens_path(path: &Path) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!("{stem}.tokens.npy"))
}

impl Shard {
    /// Opens (memory-maps) and validates a shard of any format (by extension: `.npy`,
    /// `.npz`, `.arrow`, else safetensors). `tensor` names the activation tensor, `.npz` array
    /// or cache column.
    pub fn open(path: &Path, tensor: &str) -> Result<Shard, DataError> {
        let format = ShardFormat::of(path);
        let map = Arc::new(map_file(path, 8)?);
        let (rows_at, column) = match format {
            ShardFormat::Safetensors => (
                Rows::Contiguous {
                    layout: ShardLayout::parse(&map, tensor, path)?,
                    tokens_map: None,
                },
                tensor.to_string(),
            ),
            ShardFormat::Npy => {
                let array = NpyArray::parse(&map, 0, path)?;
                let (rows, d_in, dtype) = array.activations(path, "the array")?;
                let tokens_path = npy_tokens_path(path);
                let (tokens_map, tokens_offset) = if tokens_path.is_file() {
                    let tokens_map = map_file(&tokens_path, 10)?;
                    let tokens = NpyArray::parse(&tokens_map, 0, &tokens_path)?;
                    tokens.check_tokens(&tokens_path, rows)?;
                    (Some(tokens_map), Some(tokens.data_offset))
                } else {
                    (None, None)
                };
                let layout = ShardLayout {
                    rows,
                    d_in,
                    dtype,
                    data_offset: array.data_offset,
                    tokens_offset,
                };
                (Rows::Contiguous { layout, tokens_map }, tensor.to_string())
            }
            ShardFormat::Npz => {
                let mut members = npz_members(&map, path)?;
                let names: Vec<String> = members.iter().map(|(n, _)| n.clone()).collect();
                let floats: Vec<&String> = members
                    .iter()
                    .filter(|(n, a)| {
                        n != "tokens"
                            && a.as_ref().is_ok_and(|a| {
                                matches!(a.element, NpyElement::F32 | NpyElement::F16)
                            })
                    })
                    .map(|(n, _)| n)
                    .collect();
                let chosen = if names.iter().any(|n| n == tensor) {
                    tensor.to_string()
                } else if tensor == DEFAULT_TENSOR && floats.len() == 1 {
                    floats[0].clone()
                } else {
                    return Err(DataError::tensor(
                        path,
                        format!(
                            "no array named '{tensor}' (found: {}); choose one with --tensor",
                            names.join(", ")
                        ),
                    ));
                };
                let mut take = |name: &str| {
                    members
                        .iter()
                        .position(|(n, _)| n == name)
                        .map(|i| members.swap_remove(i).1)
                };
                let array = take(&chosen)
                    .ok_or_else(|| DataError::tensor(path, format!("no array '{chosen}'")))??;
                let what = format!("array '{chosen}'");
                let (rows, d_in, dtype) = array.activations(path, &what)?;
                let tokens_offset = match take("tokens").transpose()? {
                    None => None,
                    Some(tokens) => {
                        tokens.check_tokens(path, rows)?;
                        Some(tokens.data_offset)
                    }
                };
                let layout = ShardLayout {
                    rows,
                    d_in,
                    dtype,
                    data_offset: array.data_offset,
                    tokens_offset,
                };
                (
                    Rows::Contiguous {
                        layout,
                        tokens_map: None,
                    },
                    chosen,
                )
            }
            ShardFormat::Arrow => {
                // SAFETY: the buffer borrows the map's bytes and holds an Arc to it, so they
                // outlive it; nothing writes to them.
                let buffer = unsafe {
                    Buffer::from_custom_allocation(
                        NonNull::new(map.as_ptr() as *mut u8).ok_or_else(|| {
                            DataError::Input(format!("{}: empty map", path.display()))
                        })?,
                        map.len(),
                        map.clone(),
                    )
                };
                let layout = ArrowLayout::parse(&buffer, tensor, DEFAULT_TENSOR, path)?;
                check_declared_shape(path, &layout)?;
                let column = layout.column.clone();
                (Rows::Arrow(layout), column)
            }
        };
        let (rows, d_in, dtype) = match &rows_at {
            Rows::Contiguous { layout, .. } => (layout.rows, layout.d_in, layout.dtype),
            Rows::Arrow(layout) => (layout.rows, layout.d_in, layout.dtype),
        };
        Ok(Shard {
            path: path.to_path_buf(),
            tensor: column,
            format,
            map,
            rows,
            d_in,
            dtype,
            rows_at,
        })
    }

    pub fn info(&self) -> ShardInfo {
        ShardInfo {
            path: self.path.display().to_string(),
            format: self.format,
            rows: self.rows,
            d_in: self.d_in,
            dtype: self.dtype,
            bytes: self.map.len() as u64,
            has_tokens: self.has_tokens(),
        }
    }

    pub fn has_tokens(&self) -> bool {
        match &self.rows_at {
            Rows::Contiguous { layout, .. } => layout.tokens_offset.is_some(),
            Rows::Arrow(layout) => layout.has_tokens(),
        }
    }

    /// Converts rows `start..start + out.len() / d_in` to f32 into `out`.
    pub fn read_rows(&self, start: usize, out: &mut [f32]) {
        match &self.rows_at {
            Rows::Contiguous { layout, .. } => layout.read_rows(&self.map, start, out),
            Rows::Arrow(layout) => layout.read_rows(&self.map, start, out),
        }
    }

    /// Copies rows of a 16-bit shard (f16 or bf16) into `out` as stored, for the GPU to widen.
    pub fn read_raw16(&self, start: usize, out: &mut [u16]) {
        debug_assert!(
            self.dtype.bytes() == 2,
            "read_raw16 on a {:?} shard",
            self.dtype
        );
        match &self.rows_at {
            Rows::Contiguous { layout, .. } => layout.read_raw16(&self.map, start, out),
            Rows::Arrow(layout) => layout.read_raw16(&self.map, start, out),
        }
    }

    /// Token id of `row`, when the shard has token ids.
    pub fn token(&self, row: usize) -> Option<i32> {
        match &self.rows_at {
            Rows::Contiguous {
                layout,
                tokens_map: Some(tokens),
            } => layout.token(tokens, row),
            Rows::Contiguous { layout, .. } => layout.token(&self.map, row),
            Rows::Arrow(layout) => layout.token(&self.map, row),
        }
    }
}

/// A cache's `dataset_info.json` (beside its Arrow files) must agree with what they hold.
fn check_declared_shape(path: &Path, layout: &ArrowLayout) -> Result<(), DataError> {
    let info_path = path.with_file_name("dataset_info.json");
    let Ok(text) = std::fs::read_to_string(&info_path) else {
        return Ok(());
    };
    let info: serde_json::Value = serde_json::from_str(&text).map_err(|e| DataError::Format {
        path: info_path.clone(),
        kind: "JSON",
        message: e.to_string(),
    })?;
    if let Some(shape) = declared_shape(&info, &layout.column) {
        if shape != [layout.context, layout.d_in] {
            return Err(DataError::tensor(
                path,
                format!(
                    "column '{}' holds rows of [{}, {}] but {} declares {shape:?}",
                    layout.column,
                    layout.context,
                    layout.d_in,
                    info_path.display()
                ),
            ));
        }
    }
    Ok(())
}
