//! `sae hist`'s files: `hist.safetensors` (every statistic, exactly) and `summary.json` (what
//! was computed from what, and the density histogram), the PNGs beside them, and reading them
//! back for merges.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::analysis::eval::DENSE_THRESHOLD;
use crate::analysis::hist::{Histograms, ShardEntry};
use crate::data::parts::PartInfo;
use crate::gpu::kernels::hist::LogBins;
use crate::io::{write_json_atomic, write_safetensors, TensorOut};

#[derive(Serialize, Deserialize)]
struct Summary {
    format: String,
    sae: String,
    /// What the SAE is (src/sae/formats.rs `Provenance`); absent in older outputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provenance: Option<serde_json::Value>,
    /// The part of a split job (`--part I/N`); absent for a whole pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    part: Option<PartInfo>,
    shards: Vec<ShardEntry>,
    rows: u64,
    d_sae: usize,
    bins: usize,
    bin_range: (f32, f32),
    top_m: usize,
    #[serde(default)]
    cooccurrence_features: usize,
    dead: usize,
    dense: usize,
    density_histogram: DensityHistogram,
}

#[derive(Serialize, Deserialize)]
struct DensityHistogram {
    /// Edges in log10(firing frequency).
    edges: Vec<f32>,
    counts: Vec<u64>,
    /// Latents that never fired (not in `counts`).
    never_fired: usize,
}

fn density_histogram(hist: &Histograms) -> DensityHistogram {
    let edges: Vec<f32> = (0..=50).map(|i| -10.0 + 0.2 * i as f32).collect();
    let mut counts = vec![0u64; 50];
    let mut never_fired = 0;
    for (&c, d) in hist.fire_count.iter().zip(hist.log10_density()) {
        if c == 0 {
            never_fired += 1;
        } else {
            counts[(((d + 10.0) / 0.2).floor() as usize).min(49)] += 1;
        }
    }
    DensityHistogram {
        edges,
        counts,
        never_fired,
    }
}

const HIST_FORMAT: &str = "sae-wgpu-hist-1";

/// Writes `hist.safetensors`, `summary.json` and the PNGs into `dir` (each file atomically;
/// `summary.json`, which marks the output complete, last).
pub fn save(
    hist: &Histograms,
    sae: &str,
    provenance: Option<&serde_json::Value>,
    dir: &Path,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let (n, b, m) = (hist.d_sae, hist.bins.bins, hist.top_m);
    let as_i64 = |v: &[u64]| v.iter().map(|&c| c as i64).collect::<Vec<i64>>();
    let f64_tensor = |name: &str, v: &[f64]| TensorOut {
        name: name.to_string(),
        dtype: safetensors::Dtype::F64,
        shape: vec![n],
        bytes: bytemuck::cast_slice(v).to_vec(),
    };
    let mut tensors = vec![
        TensorOut::i64("fire_count", &[n], &as_i64(&hist.fire_count)),
        f64_tensor("act_sum", &hist.act_sum),
        f64_tensor("act_sumsq", &hist.act_sumsq),
        TensorOut::f32("act_max", &[n], &hist.act_max),
        TensorOut::f32("bin_edges", &[b + 1], &hist.bins.edges()),
        TensorOut::i64("bin_counts", &[n, b], &as_i64(&hist.bin_counts)),
        TensorOut::f32("top_values", &[n, m], &hist.top_values),
        TensorOut::i64("top_rows", &[n, m], &hist.top_rows),
        TensorOut::i32("top_shards", &[n, m], &hist.top_shards),
        TensorOut::i32("top_tokens", &[n, m], &hist.top_tokens),
    ];
    let c = hist.cooc_features.len();
    if c > 0 {
        let features: Vec<i64> = hist.cooc_features.iter().map(|&f| i64::from(f)).collect();
        tensors.push(TensorOut::i64("cooc_features", &[c], &features));
        tensors.push(TensorOut::i64(
            "cooc_counts",
            &[c, c],
            &as_i64(&hist.cooc_counts),
        ));
    }
    write_safetensors(
        &dir.join("hist.safetensors"),
        &tensors,
        Some(HashMap::from([(
            "format".to_string(),
            HIST_FORMAT.to_string(),
        )])),
    )?;
    if let Err(error) = super::plots::hist_plots(dir, hist) {
        tracing::warn!("could not draw the plots: {error:#}");
    }
    let rows = hist.rows.max(1) as f64;
    write_json_atomic(
        &dir.join("summary.json"),
        &Summary {
            format: HIST_FORMAT.into(),
            sae: sae.to_string(),
            provenance: provenance.cloned(),
            part: hist.part.clone(),
            shards: hist.shards.clone(),
            rows: hist.rows,
            d_sae: n,
            bins: b,
            bin_range: (hist.bins.lo, hist.bins.hi),
            top_m: m,
            cooccurrence_features: hist.cooc_features.len(),
            dead: hist.fire_count.iter().filter(|&&c| c == 0).count(),
            dense: hist
                .fire_count
                .iter()
                .filter(|&&c| c as f64 > DENSE_THRESHOLD * rows)
                .count(),
            density_histogram: density_histogram(hist),
        },
    )
}

fn tensor_bytes<'a>(
    st: &'a SafeTensors<'a>,
    name: &str,
    shape: &[usize],
    path: &Path,
) -> anyhow::Result<&'a [u8]> {
    let view = st
        .tensor(name)
        .map_err(|_| anyhow!("{}: missing tensor '{name}'", path.display()))?;
    if view.shape() != shape {
        bail!(
            "{}: tensor '{name}' has shape {:?}, expected {shape:?}",
            path.display(),
            view.shape()
        );
    }
    Ok(view.data())
}

/// What a `sae hist` output says of its SAE: the path and, when recorded, its provenance.
pub type SaeSource = (String, Option<serde_json::Value>);

/// Reads a directory written by [`save`].
pub fn load(dir: &Path) -> anyhow::Result<(Histograms, SaeSource)> {
    let summary_path = dir.join("summary.json");
    let text = std::fs::read_to_string(&summary_path).with_context(|| {
        format!(
            "{}: cannot read (not a finished `sae hist` output?)",
            summary_path.display()
        )
    })?;
    let summary: Summary = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a `sae hist` summary", summary_path.display()))?;
    let path = dir.join("hist.safetensors");
    let bytes = std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
    let (n, b, m) = (summary.d_sae, summary.bins, summary.top_m);
    let i64s = |name: &str, shape: &[usize]| -> anyhow::Result<Vec<i64>> {
        Ok(bytemuck::pod_collect_to_vec(tensor_bytes(
            &st, name, shape, &path,
        )?))
    };
    let hist = Histograms {
        shards: summary.shards,
        rows: summary.rows,
        d_sae: n,
        bins: LogBins {
            lo: summary.bin_range.0,
            hi: summary.bin_range.1,
            bins: b,
        },
        top_m: m,
        fire_count: i64s("fire_count", &[n])?
            .into_iter()
            .map(|c| c as u64)
            .collect(),
        act_sum: bytemuck::pod_collect_to_vec(tensor_bytes(&st, "act_sum", &[n], &path)?),
        act_sumsq: bytemuck::pod_collect_to_vec(tensor_bytes(&st, "act_sumsq", &[n], &path)?),
        act_max: bytemuck::pod_collect_to_vec(tensor_bytes(&st, "act_max", &[n], &path)?),
        bin_counts: i64s("bin_counts", &[n, b])?
            .into_iter()
            .map(|c| c as u64)
            .collect(),
        top_values: bytemuck::pod_collect_to_vec(tensor_bytes(&st, "top_values", &[n, m], &path)?),
        top_rows: i64s("top_rows", &[n, m])?,
        top_shards: bytemuck::pod_collect_to_vec(tensor_bytes(&st, "top_shards", &[n, m], &path)?),
        top_tokens: bytemuck::pod_collect_to_vec(tensor_bytes(&st, "top_tokens", &[n, m], &path)?),
        cooc_features: Vec::new(),
        cooc_counts: Vec::new(),
        part: summary.part,
    };
    let c = summary.cooccurrence_features;
    let mut hist = hist;
    if c > 0 {
        hist.cooc_features = i64s("cooc_features", &[c])?
            .into_iter()
            .map(|f| f as u32)
            .collect();
        hist.cooc_counts = i64s("cooc_counts", &[c, c])?
            .into_iter()
            .map(|v| v as u64)
            .collect();
    }
    Ok((hist, (summary.sae, summary.provenance)))
}
