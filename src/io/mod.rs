//! Crash-safe file output: everything we write lands under a temporary name, is fsynced, and
//! is renamed into place, so a killed process never leaves a file that looks complete but
//! is not.

pub mod stream_writer;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// The temporary name a file is written under before the rename.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

fn sync_dir(dir: &Path) {
    // Makes the rename itself durable; not possible on every platform, and not fatal.
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, fsync of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_path(path);
    let result = (|| -> std::io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(error) = result {
        let _ = fs::remove_file(&tmp);
        return Err(error).with_context(|| format!("{}: cannot write", path.display()));
    }
    fs::rename(&tmp, path)
        .with_context(|| format!("{}: cannot move into place", path.display()))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

pub fn write_json_atomic(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// A tensor to save: name, dtype, shape and little-endian bytes.
pub struct TensorOut {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl TensorOut {
    pub fn f32(name: &str, shape: &[usize], data: &[f32]) -> Self {
        TensorOut {
            name: name.to_string(),
            dtype: Dtype::F32,
            shape: shape.to_vec(),
            bytes: bytemuck::cast_slice(data).to_vec(),
        }
    }

    pub fn f64(name: &str, shape: &[usize], data: &[f64]) -> Self {
        TensorOut {
            name: name.to_string(),
            dtype: Dtype::F64,
            shape: shape.to_vec(),
            bytes: bytemuck::cast_slice(data).to_vec(),
        }
    }

    pub fn i32(name: &str, shape: &[usize], data: &[i32]) -> Self {
        TensorOut {
            name: name.to_string(),
            dtype: Dtype::I32,
            shape: shape.to_vec(),
            bytes: bytemuck::cast_slice(data).to_vec(),
        }
    }

    pub fn u32(name: &str, shape: &[usize], data: &[u32]) -> Self {
        TensorOut {
            name: name.to_string(),
            dtype: Dtype::U32,
            shape: shape.to_vec(),
            bytes: bytemuck::cast_slice(data).to_vec(),
        }
    }

    pub fn i64(name: &str, shape: &[usize], data: &[i64]) -> Self {
        TensorOut {
            name: name.to_string(),
            dtype: Dtype::I64,
            shape: shape.to_vec(),
            bytes: bytemuck::cast_slice(data).to_vec(),
        }
    }

    pub fn f16(name: &str, shape: &[usize], data: &[f32]) -> Self {
        let half: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
        TensorOut {
            name: name.to_string(),
            dtype: Dtype::F16,
            shape: shape.to_vec(),
            bytes: bytemuck::cast_slice(&half).to_vec(),
        }
    }

    pub fn bf16(name: &str, shape: &[usize], data: &[f32]) -> Self {
        let half: Vec<half::bf16> = data.iter().map(|&v| half::bf16::from_f32(v)).collect();
        TensorOut {
            name: name.to_string(),
            dtype: Dtype::BF16,
            shape: shape.to_vec(),
            bytes: bytemuck::cast_slice(&half).to_vec(),
        }
    }
}

/// Serialises tensors (in the given order) with optional string metadata and writes the file
/// atomically.
pub fn write_safetensors(
    path: &Path,
    tensors: &[TensorOut],
    metadata: Option<HashMap<String, String>>,
) -> anyhow::Result<()> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .map(|view| (t.name.clone(), view))
                .with_context(|| format!("tensor '{}' for {}", t.name, path.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    let bytes = safetensors::serialize(views, metadata)
        .with_context(|| format!("serialising {}", path.display()))?;
    write_atomic(path, &bytes)
}
