//! NumPy arrays as shards: `.npy` files (format versions 1–3) and the stored (uncompressed)
//! members of `.npz` archives, memory-mapped like safetensors. Only the header is parsed; the
//! data stays in the file.

use std::io::Cursor;
use std::path::Path;

use super::dtype::ActDtype;
use super::error::DataError;

/// Element types we read from NumPy arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyElement {
    F32,
    F16,
    I32,
    /// Any other plain numeric type, named by its `descr` (refused where it is used).
    Other,
}

/// A validated `.npy` array within some bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyArray {
    pub descr: String,
    pub element: NpyElement,
    pub shape: Vec<usize>,
    /// Byte offset of the first element.
    pub data_offset: usize,
}

fn format_error(path: &Path, message: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        kind: "NumPy",
        message: message.into(),
    }
}

/// The value of `key` in a NumPy header dict (`{'descr': '<f4', 'fortran_order': False,
/// 'shape': (3, 4), }`): the text up to the next top-level comma.
fn header_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?;
    let rest = rest.trim_start();
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth > 0 => depth -= 1,
            ',' | '}' if depth == 0 => return Some(rest[..i].trim()),
            _ => {}
        }
    }
    Some(rest.trim())
}

impl NpyArray {
    /// Parses the `.npy` header at `offset` of `bytes` and checks that the data lies within
    /// them. `path` only names the file in errors. This is what the fuzz target drives.
    pub fn parse(bytes: &[u8], offset: usize, path: &Path) -> Result<NpyArray, DataError> {
        let file = bytes
            .get(offset..)
            .ok_or_else(|| format_error(path, "array starts past the end of the file"))?;
        if file.len() < 10 || &file[..6] != b"\x93NUMPY" {
            return Err(format_error(path, "missing the \\x93NUMPY magic"));
        }
        let (header_len, header_start): (usize, usize) = match file[6] {
            1 => (usize::from(u16::from_le_bytes([file[8], file[9]])), 10),
            2 | 3 if file.len() >= 12 => (
                u32::from_le_bytes([file[8], file[9], file[10], file[11]]) as usize,
                12,
            ),
            major => {
                return Err(format_error(
                    path,
                    format!("unknown format version {major}"),
                ))
            }
        };
        let header_end = header_start
            .checked_add(header_len)
            .filter(|&end| end <= file.len())
            .ok_or_else(|| format_error(path, "header runs past the end of the file"))?;
        let header = std::str::from_utf8(&file[header_start..header_end])
            .map_err(|_| format_error(path, "header is not text"))?;
        let descr_text = header_value(header, "descr")
            .ok_or_else(|| format_error(path, "header has no 'descr'"))?;
        if descr_text.starts_with('[') {
            return Err(format_error(
                path,
                format!("structured dtype {descr_text} cannot be read: save a plain numeric array"),
            ));
        }
        let descr = descr_text
            .trim_matches(|c| c == '\'' || c == '"')
            .to_string();
        let element = match descr.as_str() {
            "<f4" | "=f4" | "f4" => NpyElement::F32,
            "<f2" | "=f2" | "f2" => NpyElement::F16,
            "<i4" | "=i4" | "i4" => NpyElement::I32,
            d if d.ends_with('O') => {
                return Err(format_error(
                    path,
                    "object arrays (dtype O) cannot be read: save a numeric array",
                ))
            }
            d if d.starts_with('>') => {
                return Err(format_error(
                    path,
                    format!("big-endian dtype {d} cannot be read: save as little-endian ('<')"),
                ))
            }
            _ => NpyElement::Other,
        };
        match header_value(header, "fortran_order") {
            Some("False") => {}
            Some("True") => {
                return Err(format_error(
                    path,
                    "array is in Fortran (column-major) order: save it with np.ascontiguousarray",
                ))
            }
            _ => return Err(format_error(path, "header has no valid 'fortran_order'")),
        }
        let shape_text = header_value(header, "shape")
            .ok_or_else(|| format_error(path, "header has no 'shape'"))?;
        let inner = shape_text
            .strip_prefix('(')
            .and_then(|s| s.strip_suffix(')'))
            .ok_or_else(|| format_error(path, format!("bad shape {shape_text}")))?;
        let shape = inner
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_end_matches('L').parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| format_error(path, format!("bad shape {shape_text}")))?;
        let element_bytes = match element {
            NpyElement::F16 => 2,
            NpyElement::F32 | NpyElement::I32 => 4,
            NpyElement::Other => 1,
        };
        let data_bytes = shape
            .iter()
            .try_fold(element_bytes, |acc: usize, &d| acc.checked_mul(d))
            .ok_or_else(|| format_error(path, format!("shape {shape_text} overflows")))?;
        if header_end + data_bytes > file.len() && element != NpyElement::Other {
            return Err(format_error(
                path,
                format!(
                    "holds {} data bytes but shape {shape_text} of {descr} needs {data_bytes} (truncated?)",
                    file.len() - header_end
                ),
            ));
        }
        Ok(NpyArray {
            descr,
            element,
            shape,
            data_offset: offset + header_end,
        })
    }

    /// `[n, d]` or `[n, 1, d]` floats as (rows, d_in, dtype), or an error naming the problem.
    pub fn activations(
        &self,
        path: &Path,
        what: &str,
    ) -> Result<(usize, usize, ActDtype), DataError> {
        let dtype = match self.element {
            NpyElement::F32 => ActDtype::F32,
            NpyElement::F16 => ActDtype::F16,
            _ => {
                return Err(DataError::tensor(
                    path,
                    format!(
                        "{what} has dtype {}; expected float32 or float16",
                        self.descr
                    ),
                ))
            }
        };
        let (rows, d_in) = match self.shape.as_slice() {
            [n, d] | [n, 1, d] => (*n, *d),
            shape => {
                return Err(DataError::tensor(
                    path,
                    format!(
                    "{what} has shape {shape:?}; expected [n_tokens, d_in] or [n_tokens, 1, d_in]"
                ),
                ))
            }
        };
        if rows == 0 || d_in == 0 {
            return Err(DataError::tensor(
                path,
                format!("{what} is empty (shape {:?})", self.shape),
            ));
        }
        Ok((rows, d_in, dtype))
    }

    /// Checks a token-id array: int32 `[rows]`.
    pub fn check_tokens(&self, path: &Path, rows: usize) -> Result<(), DataError> {
        if self.element != NpyElement::I32 || self.shape != [rows] {
            return Err(DataError::tensor(
                path,
                format!(
                    "token ids are {} {:?}; expected int32 [{rows}]",
                    self.descr, self.shape
                ),
            ));
        }
        Ok(())
    }
}

/// A member of an `.npz` archive: its name (without `.npy`) and its array, or why it cannot
/// be read in place.
pub type NpzMember = (String, Result<NpyArray, DataError>);

/// The arrays of an `.npz` archive. A compressed member cannot be memory-mapped and holds an
/// error saying so, reported only if that member is asked for.
pub fn npz_members(bytes: &[u8], path: &Path) -> Result<Vec<NpzMember>, DataError> {
    let zip_error = |e: zip::result::ZipError| DataError::Format {
        path: path.to_path_buf(),
        kind: "NumPy .npz (zip)",
        message: e.to_string(),
    };
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(zip_error)?;
    let mut members = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let file = archive.by_index_raw(i).map_err(zip_error)?;
        let name = file.name().trim_end_matches(".npy").to_string();
        let array = if file.compression() != zip::CompressionMethod::Stored {
            Err(format_error(
                path,
                format!(
                    "member '{name}' is compressed (np.savez_compressed), so it cannot be memory-mapped: save with np.savez or as .npy"
                ),
            ))
        } else {
            // The member's own bytes only, so its array cannot reach into the next one.
            let end = file
                .data_start()
                .zip(Some(file.size()))
                .and_then(|(start, size)| start.checked_add(size))
                .and_then(|end| usize::try_from(end).ok())
                .filter(|&end| end <= bytes.len());
            match (file.data_start(), end) {
                (Some(start), Some(end)) => NpyArray::parse(&bytes[..end], start as usize, path),
                _ => Err(format_error(
                    path,
                    format!("member '{name}' lies outside the file"),
                )),
            }
        };
        members.push((name, array));
    }
    Ok(members)
}
