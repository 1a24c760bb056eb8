//! The `sae encode` job: the sparse codes of every row, one safetensors file per input shard
//! (`indices [n, k]` u32, `values [n, k]` f16 or f32, `tokens` passed through), streamed to
//! disk as they are computed; `encode.json` (or this part's record) lists them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use safetensors::Dtype;
use serde::Serialize;
use serde_json::json;

use super::inputs::SaeInputs;
use super::merge::encode_part_file;
use super::progress;
use crate::analysis::encode::{CodeSink, EncodeConsumer};
use crate::analysis::scan::{Scales, Scan};
use crate::choice::Choice;
use crate::data::{BatchStream, Shard, StreamConfig};
use crate::io::stream_writer::{StreamTensor, StreamWriter};
use crate::io::write_json_atomic;

/// How the code values are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueDtype {
    F16,
    F32,
}

impl Choice for ValueDtype {
    const CHOICES: &'static [(&'static str, Self, &'static str)] = &[
        ("f16", ValueDtype::F16, "half precision"),
        ("f32", ValueDtype::F32, "single precision"),
    ];
}

pub struct EncodeRequest {
    pub inputs: SaeInputs,
    pub out: PathBuf,
    pub values: ValueDtype,
    pub batch_size: usize,
    /// Thresholded SAEs: latents kept per row.
    pub cap: usize,
    pub quiet: bool,
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

pub struct EncodeReport {
    pub rows: u64,
    pub shards: Vec<EncodedShard>,
    pub k: usize,
    pub thresholded: bool,
    /// The record written (encode.json, or this part's).
    pub written: PathBuf,
}

pub fn encode(request: &EncodeRequest) -> anyhow::Result<EncodeReport> {
    anyhow::ensure!(!request.inputs.shards.is_empty(), "no input shards given");
    anyhow::ensure!(request.batch_size > 0, "--batch-size must be at least 1");
    let opened = request.inputs.open()?;
    let outputs = output_paths(&request.out, &opened.shards)?;
    let out_dir = &request.out;
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("{}: cannot create", out_dir.display()))?;
    let gpu = request.inputs.gpu()?;
    let sae = request
        .inputs
        .upload(&gpu, &opened, request.cap, request.batch_size)?;
    let scan = Scan::new(&gpu, &sae, request.batch_size, false)?;
    let total = opened.rows();
    let bar = progress::rows(total, request.quiet);
    let thresholded = sae.thresholds.is_some();
    let mut report = Vec::new();
    for (shard, out) in opened.shards.into_iter().zip(outputs) {
        report.push(encode_shard(
            &scan,
            shard,
            &out,
            request.values,
            thresholded,
            |rows| bar.inc(rows),
        )?);
    }
    bar.finish_and_clear();
    let mut summary = json!({
        "sae": opened.loaded.dir.display().to_string(),
        "provenance": opened.loaded.provenance,
        "k": sae.k,
        "values": request.values,
        "shards": report,
    });
    let written = match &opened.part {
        Some(info) => {
            summary["part"] = serde_json::to_value(info)?;
            out_dir.join(encode_part_file(info))
        }
        None => out_dir.join("encode.json"),
    };
    write_json_atomic(&written, &summary)?;
    Ok(EncodeReport {
        rows: total,
        shards: report,
        k: sae.k,
        thresholded,
        written,
    })
}

/// Each shard's output path; two shards of the same name are refused.
fn output_paths(out_dir: &Path, shards: &[Shard]) -> anyhow::Result<Vec<PathBuf>> {
    let mut outputs = Vec::new();
    for shard in shards {
        let out = output_path(out_dir, &shard.path)?;
        if outputs.contains(&out) {
            bail!(
                "{}: two input shards share this file name",
                shard.path.display()
            );
        }
        outputs.push(out);
    }
    Ok(outputs)
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

/// The codes written row by row into one shard's file.
struct ShardWriter {
    writer: StreamWriter,
    values: ValueDtype,
    has_tokens: bool,
}

impl CodeSink for ShardWriter {
    fn codes(
        &mut self,
        first_row: usize,
        idx: &[u32],
        val: &[f32],
        tokens: &[i32],
    ) -> anyhow::Result<()> {
        let w = &mut self.writer;
        w.write_rows("indices", first_row, bytemuck::cast_slice(idx))?;
        match self.values {
            ValueDtype::F32 => w.write_rows("values", first_row, bytemuck::cast_slice(val))?,
            ValueDtype::F16 => {
                let half: Vec<half::f16> = val.iter().map(|&v| half::f16::from_f32(v)).collect();
                w.write_rows("values", first_row, bytemuck::cast_slice(&half))?;
            }
        }
        if self.has_tokens {
            w.write_rows("tokens", first_row, bytemuck::cast_slice(tokens))?;
        }
        Ok(())
    }
}

/// Encodes one shard into `out` (written atomically); `on_rows` reports progress.
fn encode_shard(
    scan: &Scan<'_, '_>,
    shard: Shard,
    out: &Path,
    values: ValueDtype,
    thresholded: bool,
    on_rows: impl FnMut(u64),
) -> anyhow::Result<EncodedShard> {
    let (n, k) = (shard.rows, scan.pass.sae.k);
    let has_tokens = shard.has_tokens();
    let input = shard.path.display().to_string();
    let dtype = match values {
        ValueDtype::F16 => Dtype::F16,
        ValueDtype::F32 => Dtype::F32,
    };
    let tensor = |name: &str, dtype, shape: Vec<usize>| StreamTensor {
        name: name.into(),
        dtype,
        shape,
    };
    let mut tensors = vec![
        tensor("indices", Dtype::U32, vec![n, k]),
        tensor("values", dtype, vec![n, k]),
    ];
    if has_tokens {
        tensors.push(tensor("tokens", Dtype::I32, vec![n]));
    }
    let metadata = BTreeMap::from([
        ("source".to_string(), input.clone()),
        ("k".to_string(), k.to_string()),
    ]);
    let mut sink = ShardWriter {
        writer: StreamWriter::create(out, &tensors, &metadata)?,
        values,
        has_tokens,
    };
    let result = (|| -> anyhow::Result<Option<u64>> {
        let stream = BatchStream::start(
            Arc::new(vec![shard]),
            StreamConfig::sequential(scan.pass.capacity()),
        )?;
        let mut consumer = EncodeConsumer::new(&mut sink, k, thresholded);
        scan.run(stream, Scales::NONE, &mut [&mut consumer], on_rows)?;
        anyhow::ensure!(
            consumer.rows == n,
            "{input}: read {} of {n} rows",
            consumer.rows
        );
        Ok(consumer.dropped)
    })();
    let dropped = match result {
        Ok(dropped) => {
            sink.writer.finish()?;
            dropped
        }
        Err(error) => {
            sink.writer.abandon();
            return Err(error);
        }
    };
    Ok(EncodedShard {
        input,
        output: out.display().to_string(),
        rows: n,
        k,
        dropped_activations: dropped,
    })
}
