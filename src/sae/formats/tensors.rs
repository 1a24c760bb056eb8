//! Reading the files a checkpoint is made of: JSON configurations and safetensors tensors of
//! an exact shape, in any float dtype, every failure naming the file and the tensor.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

pub fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))
}

pub fn read_safetensors(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))
}

pub fn parse<'a>(bytes: &'a [u8], path: &Path) -> anyhow::Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow!("{}: not a valid safetensors file: {e}", path.display()))
}

/// Reads a float tensor (f32, f16 or bf16) of exactly `shape` as f32.
pub fn read_tensor_f32(
    st: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
    path: &Path,
) -> anyhow::Result<Vec<f32>> {
    read_tensor_f64(st, name, shape, path).map(|v| v.into_iter().map(|x| x as f32).collect())
}

/// Reads a float tensor (f64, f32, f16 or bf16) of exactly `shape` as f64.
pub fn read_tensor_f64(
    st: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
    path: &Path,
) -> anyhow::Result<Vec<f64>> {
    let view = st
        .tensor(name)
        .map_err(|_| anyhow!("{}: missing tensor '{name}'", path.display()))?;
    if view.shape() != shape {
        bail!(
            "{}: tensor '{name}' has shape {:?}, expected {:?}",
            path.display(),
            view.shape(),
            shape
        );
    }
    let bytes = view.data();
    Ok(match view.dtype() {
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect(),
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| f64::from(half::f16::from_le_bytes([b[0], b[1]]).to_f32()))
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| f64::from(half::bf16::from_le_bytes([b[0], b[1]]).to_f32()))
            .collect(),
        other => bail!(
            "{}: tensor '{name}' has dtype {other:?}; expected F64, F32, F16 or BF16",
            path.display()
        ),
    })
}

/// A non-negative integer field of a configuration, or an error naming it.
pub fn cfg_usize(cfg: &Value, key: &str, path: &Path) -> anyhow::Result<usize> {
    cfg.get(key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| anyhow!("{}: missing or non-integer \"{key}\"", path.display()))
}

pub fn cfg_str<'a>(cfg: &'a Value, key: &str) -> Option<&'a str> {
    cfg.get(key).and_then(Value::as_str)
}
