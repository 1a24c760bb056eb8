//! A safetensors file written row block by row block: the header (shapes known up front) goes
//! first, then each tensor's rows land at their offsets, so memory stays bounded by one batch.
//! The file is written under a temporary name and renamed into place by `finish`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use safetensors::Dtype;

use super::temp_path;

pub struct StreamTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
}

pub struct StreamWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: File,
    data_start: u64,
    /// Byte offset and row size of each tensor, by name.
    layout: BTreeMap<String, (u64, u64)>,
}

fn dtype_name(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F32 => "F32",
        Dtype::F16 => "F16",
        Dtype::BF16 => "BF16",
        Dtype::I32 => "I32",
        Dtype::U32 => "U32",
        Dtype::I64 => "I64",
        _ => "U8",
    }
}

impl StreamWriter {
    pub fn create(
        path: &Path,
        tensors: &[StreamTensor],
        metadata: &BTreeMap<String, String>,
    ) -> anyhow::Result<Self> {
        let mut header = serde_json::Map::new();
        let mut layout = BTreeMap::new();
        let mut offset = 0u64;
        for t in tensors {
            let elem = t.dtype.bitsize() as u64 / 8;
            let bytes = t.shape.iter().product::<usize>() as u64 * elem;
            let row = t.shape.iter().skip(1).product::<usize>() as u64 * elem;
            header.insert(
                t.name.clone(),
                serde_json::json!({"dtype": dtype_name(t.dtype), "shape": t.shape, "data_offsets": [offset, offset + bytes]}),
            );
            layout.insert(t.name.clone(), (offset, row));
            offset += bytes;
        }
        if !metadata.is_empty() {
            header.insert("__metadata__".into(), serde_json::to_value(metadata)?);
        }
        let mut json = serde_json::to_vec(&serde_json::Value::Object(header))?;
        // Pad the header with spaces so the data starts 8-byte aligned.
        while (json.len() + 8) % 8 != 0 {
            json.push(b' ');
        }
        let tmp = temp_path(path);
        let mut file =
            File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        file.write_all(&(json.len() as u64).to_le_bytes())?;
        file.write_all(&json)?;
        let data_start = 8 + json.len() as u64;
        file.set_len(data_start + offset)?;
        Ok(StreamWriter {
            path: path.to_path_buf(),
            tmp,
            file,
            data_start,
            layout,
        })
    }

    /// Writes `bytes` as rows of `tensor` starting at row `first_row`.
    pub fn write_rows(
        &mut self,
        tensor: &str,
        first_row: usize,
        bytes: &[u8],
    ) -> anyhow::Result<()> {
        let (offset, row) = self.layout[tensor];
        self.file.seek(SeekFrom::Start(
            self.data_start + offset + first_row as u64 * row,
        ))?;
        self.file
            .write_all(bytes)
            .with_context(|| format!("{}: cannot write", self.tmp.display()))
    }

    /// Flushes, fsyncs and renames the file into place.
    pub fn finish(self) -> anyhow::Result<()> {
        self.file.sync_all()?;
        drop(self.file);
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("{}: cannot move into place", self.path.display()))
    }
}

impl StreamWriter {
    /// Removes the temporary file of an abandoned write.
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.tmp);
    }
}
