//! SAELens activation caches: a Hugging Face dataset saved to disk by `CacheActivationsRunner`
//! (`data-*.arrow` Arrow IPC stream files beside `dataset_info.json` and `state.json`). Each
//! dataset row is one context: a column named by the hook holding `[context_size, d_in]`
//! floats (the `Array2D` feature, stored as `list<list<float>>`) and `token_ids
//! [context_size]` int32. A shard row is one token.
//!
//! The file is decoded once, zero-copy over the memory map, only to find where each record
//! batch's values lie (arrow-rs reads the IPC framing and checks the offsets). Reading rows
//! afterwards converts straight from the map, like a safetensors shard.

use std::path::Path;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float16Type, Float32Type, Int32Type};
use arrow_array::{Array, ArrayRef};
use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;
use arrow_schema::DataType;

use super::dtype::{convert_rows, copy_raw16, ActDtype};
use super::error::DataError;
use super::guard::catch_panics;

/// The column of the token ids SAELens writes beside the activations.
pub const TOKEN_COLUMN: &str = "token_ids";

/// Where one record batch's rows lie in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BatchSpan {
    first_row: usize,
    rows: usize,
    values_offset: usize,
    tokens_offset: Option<usize>,
}

/// A validated Arrow cache file: which column, its shape, and where every batch's rows are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrowLayout {
    pub column: String,
    /// Tokens per dataset row (SAELens' context size).
    pub context: usize,
    pub d_in: usize,
    pub dtype: ActDtype,
    /// Token rows in the file (dataset rows × context).
    pub rows: usize,
    spans: Vec<BatchSpan>,
}

fn format_error(path: &Path, message: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        kind: "Arrow",
        message: message.into(),
    }
}

/// Is `data_type` a list of lists of floats (an `Array2D` column)?
fn is_activation_column(data_type: &DataType) -> bool {
    let inner = match data_type {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => f.data_type(),
        _ => return false,
    };
    let leaf = match inner {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => f.data_type(),
        _ => return false,
    };
    matches!(leaf, DataType::Float32 | DataType::Float16)
}

/// The element range of each entry of a list-like array, as (first child index, length).
fn list_ranges(array: &ArrayRef) -> Option<(Vec<(usize, usize)>, ArrayRef)> {
    if let Some(list) = array.as_list_opt::<i32>() {
        let ranges = list
            .value_offsets()
            .windows(2)
            .map(|w| (w[0].max(0) as usize, (w[1] - w[0]).max(0) as usize))
            .collect();
        return Some((ranges, list.values().clone()));
    }
    if let Some(list) = array.as_list_opt::<i64>() {
        let ranges = list
            .value_offsets()
            .windows(2)
            .map(|w| (w[0].max(0) as usize, (w[1] - w[0]).max(0) as usize))
            .collect();
        return Some((ranges, list.values().clone()));
    }
    if let Some(list) = array.as_fixed_size_list_opt() {
        let len = list.value_length().max(0) as usize;
        let ranges = (0..list.len())
            .map(|i| (list.value_offset(i).max(0) as usize, len))
            .collect();
        return Some((ranges, list.values().clone()));
    }
    None
}

/// Checks that `ranges` are back to back with `each` elements apiece and returns the first
/// child index.
fn contiguous(ranges: &[(usize, usize)], each: usize) -> Option<usize> {
    let first = ranges.first()?.0;
    ranges
        .iter()
        .enumerate()
        .all(|(i, &(start, len))| len == each && start == first + i * each)
        .then_some(first)
}

/// Byte offset of element `index` of a primitive buffer starting at `ptr`, when the buffer
/// lies inside the file at `base..base + len` (zero-copy) and `count` elements fit.
fn offset_in_file(
    ptr: *const u8,
    base: usize,
    len: usize,
    index: usize,
    count: usize,
    bytes: usize,
) -> Option<usize> {
    let start = (ptr as usize)
        .checked_sub(base)?
        .checked_add(index * bytes)?;
    (start.checked_add(count * bytes)? <= len).then_some(start)
}

impl ArrowLayout {
    /// Decodes an Arrow IPC stream (the whole file in `file`) and indexes the rows of
    /// `column`. When `column` is the default name and absent, the only activation column is
    /// taken. `path` only names the file in errors. This is what the fuzz target drives.
    pub fn parse(
        file: &Buffer,
        column: &str,
        default_column: &str,
        path: &Path,
    ) -> Result<ArrowLayout, DataError> {
        // arrow-rs panics on some malformed streams; those are bad files, not our bugs.
        catch_panics(|| Self::parse_unguarded(file, column, default_column, path))
            .map_err(|message| format_error(path, message))?
    }

    fn parse_unguarded(
        file: &Buffer,
        column: &str,
        default_column: &str,
        path: &Path,
    ) -> Result<ArrowLayout, DataError> {
        let base = file.as_ptr() as usize;
        let file_len = file.len();
        let mut remaining = file.clone();
        let mut decoder = StreamDecoder::new().with_require_alignment(true);
        let mut layout: Option<ArrowLayout> = None;
        let mut column_index = None;
        let mut token_index = None;
        loop {
            let batch = decoder
                .decode(&mut remaining)
                .map_err(|e| format_error(path, e.to_string()))?;
            let Some(batch) = batch else { break };
            let schema = batch.schema();
            let (ci, ti) = match column_index {
                Some(c) => (c, token_index),
                None => {
                    let candidates: Vec<&str> = schema
                        .fields()
                        .iter()
                        .filter(|f| is_activation_column(f.data_type()))
                        .map(|f| f.name().as_str())
                        .collect();
                    let chosen = match schema.index_of(column) {
                        Ok(i) => i,
                        Err(_) if column == default_column && candidates.len() == 1 => {
                            schema.index_of(candidates[0]).unwrap_or(0)
                        }
                        Err(_) => {
                            return Err(DataError::tensor(
                                path,
                                format!(
                                    "no column '{column}' (activation columns: {}); choose one with --tensor",
                                    if candidates.is_empty() { "none".to_string() } else { candidates.join(", ") }
                                ),
                            ))
                        }
                    };
                    let field = schema.field(chosen);
                    if !is_activation_column(field.data_type()) {
                        return Err(DataError::tensor(
                            path,
                            format!(
                                "column '{}' is {}; expected [context_size, d_in] floats (SAELens' Array2D)",
                                field.name(),
                                field.data_type()
                            ),
                        ));
                    }
                    column_index = Some(chosen);
                    token_index = schema.index_of(TOKEN_COLUMN).ok();
                    (chosen, token_index)
                }
            };
            let name = schema.field(ci).name().clone();
            let acts = batch.column(ci);
            if batch.num_rows() == 0 {
                continue;
            }
            let bad = |what: &str| DataError::tensor(path, format!("column '{name}': {what}"));
            if acts.null_count() > 0 {
                return Err(bad("holds null rows"));
            }
            let (outer, inner) = list_ranges(acts).ok_or_else(|| bad("not a list column"))?;
            let context = outer[0].1;
            let first_token = contiguous(&outer, context)
                .ok_or_else(|| bad("rows of different lengths or out of order"))?;
            let (token_ranges, values) =
                list_ranges(&inner).ok_or_else(|| bad("rows are not lists of lists"))?;
            let n_tokens = outer.len() * context;
            let token_ranges = token_ranges
                .get(first_token..first_token + n_tokens)
                .ok_or_else(|| bad("offsets point past the data"))?;
            if inner.null_count() > 0 || values.null_count() > 0 {
                return Err(bad("holds null values"));
            }
            let d_in = token_ranges.first().map_or(0, |r| r.1);
            if context == 0 || d_in == 0 {
                return Err(bad("rows are empty"));
            }
            let first_value = contiguous(token_ranges, d_in)
                .ok_or_else(|| bad("token rows of different lengths or out of order"))?;
            let (dtype, ptr, available) = if let Some(v) = values.as_primitive_opt::<Float32Type>()
            {
                (ActDtype::F32, v.values().as_ptr() as *const u8, v.len())
            } else if let Some(v) = values.as_primitive_opt::<Float16Type>() {
                (ActDtype::F16, v.values().as_ptr() as *const u8, v.len())
            } else {
                return Err(bad("values are not float32 or float16"));
            };
            if first_value + n_tokens * d_in > available {
                return Err(bad("offsets point past the data"));
            }
            let values_offset = offset_in_file(
                ptr,
                base,
                file_len,
                first_value,
                n_tokens * d_in,
                dtype.bytes(),
            )
            .ok_or_else(|| bad("values are not stored in place (compressed?)"))?;
            let tokens_offset = match ti {
                None => None,
                Some(ti) => {
                    let tokens = batch.column(ti);
                    let bad_tokens = |what: &str| {
                        DataError::tensor(path, format!("column '{TOKEN_COLUMN}': {what}"))
                    };
                    if tokens.null_count() > 0 {
                        return Err(bad_tokens("holds null rows"));
                    }
                    let (ranges, ids) =
                        list_ranges(tokens).ok_or_else(|| bad_tokens("not a list column"))?;
                    let first = contiguous(&ranges, context).ok_or_else(|| {
                        bad_tokens(&format!(
                            "rows are not {context} ids each, like the activations"
                        ))
                    })?;
                    let ids = ids
                        .as_primitive_opt::<Int32Type>()
                        .filter(|ids| ids.null_count() == 0)
                        .ok_or_else(|| bad_tokens("ids are not non-null int32"))?;
                    if first + n_tokens > ids.len() {
                        return Err(bad_tokens("offsets point past the data"));
                    }
                    Some(
                        offset_in_file(
                            ids.values().as_ptr() as *const u8,
                            base,
                            file_len,
                            first,
                            n_tokens,
                            4,
                        )
                        .ok_or_else(|| bad_tokens("ids are not stored in place (compressed?)"))?,
                    )
                }
            };
            let layout = layout.get_or_insert_with(|| ArrowLayout {
                column: name.clone(),
                context,
                d_in,
                dtype,
                rows: 0,
                spans: Vec::new(),
            });
            if (layout.context, layout.d_in, layout.dtype) != (context, d_in, dtype) {
                return Err(bad(&format!(
                    "record batches disagree: [{}, {}] {:?} then [{context}, {d_in}] {dtype:?}",
                    layout.context, layout.d_in, layout.dtype
                )));
            }
            if token_index.is_some() != tokens_offset.is_some() {
                return Err(bad("token ids present in some record batches only"));
            }
            layout.spans.push(BatchSpan {
                first_row: layout.rows,
                rows: n_tokens,
                values_offset,
                tokens_offset,
            });
            layout.rows += n_tokens;
        }
        decoder.finish().map_err(|_| {
            format_error(path, "the stream ends inside a message (truncated file?)")
        })?;
        match layout {
            Some(layout) if layout.rows > 0 => Ok(layout),
            _ => Err(DataError::tensor(path, "the cache holds no rows")),
        }
    }

    pub fn has_tokens(&self) -> bool {
        self.spans
            .first()
            .is_some_and(|s| s.tokens_offset.is_some())
    }

    /// The span holding `row`.
    fn span(&self, row: usize) -> &BatchSpan {
        let i = self.spans.partition_point(|s| s.first_row + s.rows <= row);
        &self.spans[i.min(self.spans.len() - 1)]
    }

    /// Converts rows `start..start + out.len() / d_in` of the file `bytes` to f32 into `out`.
    pub fn read_rows(&self, bytes: &[u8], start: usize, out: &mut [f32]) {
        self.for_each_run(start, out.len() / self.d_in, |from, done, count| {
            let d = self.d_in;
            let data = &bytes[from..from + count * d * self.dtype.bytes()];
            convert_rows(data, self.dtype, &mut out[done * d..(done + count) * d]);
        });
    }

    /// Copies rows of a float16 column into `out` as stored.
    pub fn read_raw16(&self, bytes: &[u8], start: usize, out: &mut [u16]) {
        self.for_each_run(start, out.len() / self.d_in, |from, done, count| {
            let d = self.d_in;
            copy_raw16(
                &bytes[from..from + count * d * 2],
                &mut out[done * d..(done + count) * d],
            );
        });
    }

    /// Calls `f(byte offset, rows done, rows)` for each run of `rows` rows from `start` that
    /// lies within one record batch.
    fn for_each_run(&self, start: usize, rows: usize, mut f: impl FnMut(usize, usize, usize)) {
        let row_bytes = self.d_in * self.dtype.bytes();
        let mut done = 0;
        while done < rows {
            let row = start + done;
            let span = self.span(row);
            let within = row - span.first_row;
            let count = (span.rows - within).min(rows - done);
            f(span.values_offset + within * row_bytes, done, count);
            done += count;
        }
    }

    /// Token id of `row`, when the cache has `token_ids`.
    pub fn token(&self, bytes: &[u8], row: usize) -> Option<i32> {
        let span = self.span(row);
        span.tokens_offset.map(|offset| {
            let at = offset + (row - span.first_row) * 4;
            i32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        })
    }
}

/// The `[context_size, d_in]` shape `dataset_info.json` gives the column, if it says.
pub fn declared_shape(info: &serde_json::Value, column: &str) -> Option<Vec<usize>> {
    info.get("features")?
        .get(column)?
        .get("shape")?
        .as_array()?
        .iter()
        .map(|v| v.as_u64().map(|v| v as usize))
        .collect()
}
