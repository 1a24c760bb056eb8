//! A per-row integer column of safetensors shards beside the activations (a document or window
//! id), for tools that group rows: `sae categories --cooccurrence-unit document
//! --document-column NAME`. Memory-mapped and read one value at a time.

use std::path::Path;

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::error::DataError;
use super::shard::{map_file, Shard, ShardFormat};

/// Where one shard's column lies.
struct ColumnMap {
    map: Mmap,
    offset: usize,
    /// Bytes per value: 4 (I32, U32) or 8 (I64, U64).
    width: usize,
}

/// The column `name` of every shard, in the shards' order.
pub struct RowColumn {
    name: String,
    shards: Vec<ColumnMap>,
}

impl RowColumn {
    /// Opens column `name` in each of `shards`: a 1-D integer tensor with one value per row.
    pub fn open(shards: &[Shard], name: &str) -> Result<RowColumn, DataError> {
        let mut maps = Vec::with_capacity(shards.len());
        for shard in shards {
            maps.push(open_one(shard, name)?);
        }
        Ok(RowColumn {
            name: name.to_string(),
            shards: maps,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value of `row` of shard `shard` (indices as in a batch's `origin`).
    pub fn value(&self, shard: usize, row: usize) -> i64 {
        let c = &self.shards[shard];
        let at = c.offset + row * c.width;
        let bytes = &c.map[at..at + c.width];
        if c.width == 4 {
            i64::from(i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        } else {
            let mut b = [0u8; 8];
            b.copy_from_slice(bytes);
            i64::from_le_bytes(b)
        }
    }
}

fn open_one(shard: &Shard, name: &str) -> Result<ColumnMap, DataError> {
    let path: &Path = &shard.path;
    if shard.format != ShardFormat::Safetensors {
        return Err(DataError::Input(format!(
            "{}: a row column ('{name}') is read from safetensors shards only",
            path.display()
        )));
    }
    let map = map_file(path, 8)?;
    let st = SafeTensors::deserialize(&map).map_err(|e| DataError::Format {
        path: path.to_path_buf(),
        kind: "safetensors",
        message: e.to_string(),
    })?;
    let view = st.tensor(name).map_err(|_| {
        let names: Vec<String> = st.names().into_iter().map(String::from).collect();
        DataError::tensor(
            path,
            format!(
                "no column named '{name}' (found: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ),
        )
    })?;
    let width = match view.dtype() {
        Dtype::I32 | Dtype::U32 => 4,
        Dtype::I64 | Dtype::U64 => 8,
        other => {
            return Err(DataError::tensor(
                path,
                format!(
                    "column '{name}' has dtype {other:?}; expected an integer (I32, I64, U32, U64)"
                ),
            ))
        }
    };
    if view.shape() != [shard.rows] {
        return Err(DataError::tensor(
            path,
            format!(
                "column '{name}' has shape {:?}; expected [{}], one value per row",
                view.shape(),
                shard.rows
            ),
        ));
    }
    let offset = view.data().as_ptr() as usize - map.as_ptr() as usize;
    Ok(ColumnMap { map, offset, width })
}
