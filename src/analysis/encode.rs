//! Sparse codes of every row of every shard: `indices [n, k]` u32 and `values [n, k]` (f16 or
//! f32), with `tokens` passed through, one output file per input shard.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use safetensors::Dtype;
use serde::Serialize;

use crate::data::{BatchStream, Shard, StreamConfig};
use crate::io::stream_writer::{StreamTensor, StreamWriter};
use crate::sae::pass::ForwardPass;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueDtype {
    F16,
    F32,
}

#[derive(Clone, Debug, Serialize)]
pub struct EncodedShard {
    pub input: String,
    pub output: String,
    pub rows: usize,
    pub k: usize,
    /// Non-zero latents beyond the per-row cap (ReLU / JumpReLU SAEs only).
    pub dropped_activations: Option<u64>,
}

/// Encodes one shard into `out`; `on_rows` reports progress.
pub fn encode_shard(
    pass: &ForwardPass<'_, '_>,
    shard: Shard,
    out: &Path,
    value_dtype: ValueDtype,
    mut on_rows: impl FnMut(u64),
) -> anyhow::Result<EncodedShard> {
    let sae = pass.sae;
    let (n, k) = (shard.rows, sae.k);
    let has_tokens = shard.has_tokens();
    let input = shard.path.display().to_string();
    let mut tensors = vec![
        StreamTensor {
            name: "indices".into(),
            dtype: Dtype::U32,
            shape: vec![n, k],
        },
        StreamTensor {
            name: "values".into(),
            dtype: match value_dtype {
                ValueDtype::F16 => Dtype::F16,
                ValueDtype::F32 => Dtype::F32,
            },
            shape: vec![n, k],
        },
    ];
    if has_tokens {
        tensors.push(StreamTensor {
            name: "tokens".into(),
            dtype: Dtype::I32,
            shape: vec![n],
        });
    }
    let metadata = BTreeMap::from([
        ("source".to_string(), input.clone()),
        ("k".to_string(), k.to_string()),
    ]);
    let mut writer = StreamWriter::create(out, &tensors, &metadata)?;
    let mut dropped: Option<u64> = sae.thresholds.as_ref().map(|_| 0);
    let result = (|| -> anyhow::Result<()> {
        let stream = BatchStream::start(
            Arc::new(vec![shard]),
            StreamConfig::sequential(pass.capacity()),
        )?;
        let mut row = 0usize;
        for batch in stream {
            let batch = batch?;
            pass.run(&batch.x, batch.rows, |_, _| Ok(()))?;
            let (idx, val) = pass.codes(batch.rows)?;
            if let (Some(total), Some(counts)) = (dropped.as_mut(), pass.active_counts(batch.rows)?)
            {
                *total += counts
                    .iter()
                    .map(|&a| u64::from(a).saturating_sub(k as u64))
                    .sum::<u64>();
            }
            writer.write_rows("indices", row, bytemuck::cast_slice(&idx))?;
            match value_dtype {
                ValueDtype::F32 => writer.write_rows("values", row, bytemuck::cast_slice(&val))?,
                ValueDtype::F16 => {
                    let half: Vec<half::f16> =
                        val.iter().map(|&v| half::f16::from_f32(v)).collect();
                    writer.write_rows("values", row, bytemuck::cast_slice(&half))?;
                }
            }
            if has_tokens {
                writer.write_rows("tokens", row, bytemuck::cast_slice(&batch.tokens))?;
            }
            row += batch.rows;
            on_rows(batch.rows as u64);
        }
        anyhow::ensure!(row == n, "{input}: read {row} of {n} rows");
        Ok(())
    })();
    match result {
        Ok(()) => writer.finish()?,
        Err(error) => {
            writer.abandon();
            return Err(error);
        }
    }
    Ok(EncodedShard {
        input,
        output: out.display().to_string(),
        rows: n,
        k,
        dropped_activations: dropped,
    })
}

/// Output path for `input` in `out_dir`: the same file name, with a `.safetensors`
/// extension when the input was another format (`.npy`, `.npz`, `.arrow`).
pub fn output_path(out_dir: &Path, input: &Path) -> anyhow::Result<PathBuf> {
    let name = input
        .file_name()
        .with_context(|| format!("{}: not a file name", input.display()))?;
    let out = out_dir.join(name);
    Ok(match input.extension().and_then(|e| e.to_str()) {
        Some("npy" | "npz" | "arrow") => out.with_extension("safetensors"),
        _ => out,
    })
}
