//! `sae hist`: per-feature activation statistics streamed over shards on the GPU, written as
//! `hist.safetensors` + `summary.json` (+ PNGs), and mergeable: histograms of disjoint subsets
//! merged in order equal one pass over all of them (integers exactly, sums to rounding).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};

use crate::analysis::eval::DENSE_THRESHOLD;
use crate::data::parts::PartInfo;
use crate::data::{BatchStream, Shard, StreamConfig};
use crate::gpu::kernels::backward::{launch_reverse_index, BackwardShape, ReverseIndex};
use crate::gpu::kernels::hist::{
    launch_batch_stats, launch_bin_counts, launch_cooccurrence, launch_top_rows, LogBins,
};
use crate::gpu::{Gpu, LaunchCache, Recorder};
use crate::io::{write_json_atomic, write_safetensors, TensorOut};
use crate::sae::pass::{ForwardPass, PassDepth};
use crate::sae::GpuSae;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ShardEntry {
    pub path: String,
    pub rows: usize,
}

/// Everything `sae hist` computes; `top_*` are [d_sae, top_m], empty slots hold −1.
#[derive(Clone, Debug)]
pub struct Histograms {
    pub shards: Vec<ShardEntry>,
    pub rows: u64,
    pub d_sae: usize,
    pub bins: LogBins,
    pub top_m: usize,
    pub fire_count: Vec<u64>,
    pub act_sum: Vec<f64>,
    pub act_sumsq: Vec<f64>,
    pub act_max: Vec<f32>,
    pub bin_counts: Vec<u64>,
    pub top_values: Vec<f32>,
    pub top_shards: Vec<i32>,
    pub top_rows: Vec<i64>,
    pub top_tokens: Vec<i32>,
    /// The tracked features of the co-occurrence counts (empty when not requested).
    pub cooc_features: Vec<u32>,
    /// [n, n] rows on which both features fired; the diagonal holds their fire counts.
    pub cooc_counts: Vec<u64>,
    /// The part of a split job these statistics cover (`sae hist --part I/N`).
    pub part: Option<PartInfo>,
}

#[derive(Clone, Copy, Debug)]
pub struct HistConfig {
    pub batch_size: usize,
    pub bins: usize,
    /// Histogram range; `None`: from the first batch (max activation · [1e-4, 2]).
    pub range: Option<(f32, f32)>,
    pub top_m: usize,
    /// Co-occurrence counts between this many most frequent features (0: none; a second pass).
    pub cooccurrence: usize,
}

impl Histograms {
    fn empty(d_sae: usize, bins: LogBins, top_m: usize) -> Self {
        Histograms {
            shards: Vec::new(),
            rows: 0,
            d_sae,
            bins,
            top_m,
            fire_count: vec![0; d_sae],
            act_sum: vec![0.0; d_sae],
            act_sumsq: vec![0.0; d_sae],
            act_max: vec![0.0; d_sae],
            bin_counts: vec![0; d_sae * bins.bins],
            top_values: vec![-1.0; d_sae * top_m],
            top_shards: vec![-1; d_sae * top_m],
            top_rows: vec![-1; d_sae * top_m],
            top_tokens: vec![-1; d_sae * top_m],
            cooc_features: Vec::new(),
            cooc_counts: Vec::new(),
            part: None,
        }
    }

    /// log10 of each latent's firing frequency, −10 for latents that never fired.
    pub fn log10_density(&self) -> Vec<f32> {
        log10_density(&self.fire_count, self.rows)
    }
}

/// Feature density as SAELens logs it (`sparsity.safetensors`): log10(fires / rows + 1e-10).
pub fn log10_density(fire_counts: &[u64], rows: u64) -> Vec<f32> {
    let rows = rows.max(1) as f64;
    fire_counts
        .iter()
        .map(|&c| ((c as f64 / rows) + 1e-10).log10() as f32)
        .collect()
}

/// One pass over `shards` (in order).
pub fn compute(
    gpu: &Gpu,
    sae: &GpuSae,
    shards: Vec<Shard>,
    config: HistConfig,
    mut on_rows: impl FnMut(u64),
) -> anyhow::Result<Histograms> {
    let tensor = shards.first().map(|s| s.tensor.clone()).unwrap_or_default();
    anyhow::ensure!(config.batch_size > 0, "--batch-size must be at least 1");
    anyhow::ensure!(
        (1..=4096).contains(&config.bins),
        "--bins must be between 1 and 4096, got {}",
        config.bins
    );
    anyhow::ensure!(
        (1..=1024).contains(&config.top_m),
        "--top must be between 1 and 1024, got {}",
        config.top_m
    );
    if let Some((lo, hi)) = config.range {
        anyhow::ensure!(
            lo > 0.0 && hi > lo && hi.is_finite(),
            "--range needs 0 < LO < HI, got {lo},{hi}"
        );
    }
    let (d_sae, k) = (sae.d_sae, sae.k);
    let entries: Vec<ShardEntry> = shards
        .iter()
        .map(|s| ShardEntry {
            path: s.path.display().to_string(),
            rows: s.rows,
        })
        .collect();
    let pass = ForwardPass::new(gpu, sae, config.batch_size, PassDepth::Codes)?;
    let fw = &pass.fw;
    let stats_cache = LaunchCache::default();
    let shape = BackwardShape {
        rows: config.batch_size,
        d_in: sae.d_in,
        d_sae,
        k,
    };
    let mut index = ReverseIndex::new(gpu, shape)?;
    let batch_stats = gpu.storage::<f32>("batch_stats", 4 * d_sae)?;
    let best_val = gpu.upload("best_values", &vec![-1.0f32; d_sae * config.top_m])?;
    let best_origin = gpu.upload("best_origin", &vec![u32::MAX; 3 * d_sae * config.top_m])?;
    let row_origin = gpu.storage::<u32>("row_origin", 3 * config.batch_size)?;

    let mut out: Option<Histograms> = None;
    let mut bins_buffer = None;
    let stream = BatchStream::start(
        Arc::new(shards),
        StreamConfig::sequential(config.batch_size),
    )?;
    for batch in stream {
        let batch = batch?;
        let rows = batch.rows;
        if index.shape.rows != rows {
            index = ReverseIndex::new(gpu, BackwardShape { rows, ..shape })?;
        }
        let origin: Vec<u32> = batch
            .origin
            .iter()
            .enumerate()
            .flat_map(|(r, &(shard, row))| {
                [
                    shard,
                    row,
                    batch.tokens.get(r).map_or(u32::MAX, |&t| t as u32),
                ]
            })
            .collect();
        gpu.write(&row_origin, &origin)?;
        pass.run(&batch.x, rows, |rec, fw| {
            launch_reverse_index(rec, &fw.top_idx, &index)
        })?;

        let hist = match out.as_mut() {
            Some(hist) => hist,
            None => {
                let (lo, hi) = match config.range {
                    Some(range) => range,
                    None => {
                        let values: Vec<f32> = gpu.read(&fw.top_val)?;
                        let max = values[..rows * k].iter().copied().fold(0.0f32, f32::max);
                        if max > 0.0 {
                            (max * 1e-4, max * 2.0)
                        } else {
                            (1e-4, 1.0)
                        }
                    }
                };
                let bins = LogBins {
                    lo,
                    hi,
                    bins: config.bins,
                };
                bins_buffer = Some(gpu.storage::<u32>("bin_counts", d_sae * config.bins)?);
                out.insert(Histograms::empty(d_sae, bins, config.top_m))
            }
        };
        let bins = bins_buffer
            .as_ref()
            .ok_or_else(|| anyhow!("histogram buffer missing"))?;
        let mut rec = Recorder::cached(gpu, "hist stats", &stats_cache);
        launch_batch_stats(&mut rec, &index, &fw.top_val, &batch_stats)?;
        launch_bin_counts(&mut rec, &index, &fw.top_idx, &fw.top_val, hist.bins, bins)?;
        launch_top_rows(
            &mut rec,
            &index,
            &fw.top_val,
            &row_origin,
            config.top_m,
            &best_val,
            &best_origin,
        )?;
        rec.submit()?;
        let stats: Vec<f32> = gpu.read(&batch_stats)?;
        for (i, s) in stats.chunks_exact(4).enumerate() {
            hist.fire_count[i] += u64::from(s[0].to_bits());
            hist.act_sum[i] += f64::from(s[1]);
            hist.act_sumsq[i] += f64::from(s[2]);
            hist.act_max[i] = hist.act_max[i].max(s[3]);
        }
        hist.rows += rows as u64;
        on_rows(rows as u64);
    }
    let mut hist = out.ok_or_else(|| anyhow!("the input shards hold no rows"))?;
    if config.cooccurrence > 0 {
        let shards: Vec<Shard> = entries
            .iter()
            .map(|e| Shard::open(Path::new(&e.path), &tensor))
            .collect::<Result<_, _>>()?;
        cooccurrence_pass(&pass, shards, config, &mut hist, &mut on_rows)?;
    }
    hist.shards = entries;
    if let Some(bins) = &bins_buffer {
        let counts: Vec<u32> = gpu.read(bins)?;
        hist.bin_counts = counts.into_iter().map(u64::from).collect();
    }
    hist.top_values = gpu.read(&best_val)?;
    let origin: Vec<u32> = gpu.read(&best_origin)?;
    for (slot, o) in origin.chunks_exact(3).enumerate() {
        if o[0] == u32::MAX {
            continue;
        }
        hist.top_shards[slot] = o[0] as i32;
        hist.top_rows[slot] = i64::from(o[1]);
        hist.top_tokens[slot] = if o[2] == u32::MAX { -1 } else { o[2] as i32 };
    }
    Ok(hist)
}

/// Second pass: pair counts between the `config.cooccurrence` most frequent features.
fn cooccurrence_pass(
    pass: &ForwardPass<'_, '_>,
    shards: Vec<Shard>,
    config: HistConfig,
    hist: &mut Histograms,
    on_rows: &mut impl FnMut(u64),
) -> anyhow::Result<()> {
    let (gpu, sae) = (pass.gpu, pass.sae);
    let d_sae = sae.d_sae;
    let mut order: Vec<usize> = (0..d_sae).collect();
    order.sort_by(|&a, &b| hist.fire_count[b].cmp(&hist.fire_count[a]).then(a.cmp(&b)));
    order.truncate(config.cooccurrence.min(d_sae));
    let n = order.len();
    let mut slot_of = vec![u32::MAX; d_sae];
    for (slot, &feature) in order.iter().enumerate() {
        slot_of[feature] = slot as u32;
    }
    let slot_buffer = gpu.upload("cooc_slot_of", &slot_of)?;
    let pairs = gpu.storage::<u32>("cooc_pairs", n * n)?;
    let shape = BackwardShape {
        rows: config.batch_size,
        d_in: sae.d_in,
        d_sae,
        k: sae.k,
    };
    let mut index = ReverseIndex::new(gpu, shape)?;
    for batch in BatchStream::start(
        Arc::new(shards),
        StreamConfig::sequential(config.batch_size),
    )? {
        let batch = batch?;
        if index.shape.rows != batch.rows {
            index = ReverseIndex::new(
                gpu,
                BackwardShape {
                    rows: batch.rows,
                    ..shape
                },
            )?;
        }
        pass.run(&batch.x, batch.rows, |rec, fw| {
            launch_cooccurrence(
                rec,
                &index,
                &fw.top_idx,
                &fw.top_val,
                &slot_buffer,
                n,
                &pairs,
            )
        })?;
        on_rows(batch.rows as u64);
    }
    let upper: Vec<u32> = gpu.read(&pairs)?;
    let mut counts = vec![0u64; n * n];
    for a in 0..n {
        counts[a * n + a] = hist.fire_count[order[a]];
        for b in a + 1..n {
            let c = u64::from(upper[a * n + b]);
            counts[a * n + b] = c;
            counts[b * n + a] = c;
        }
    }
    hist.cooc_features = order.iter().map(|&f| f as u32).collect();
    hist.cooc_counts = counts;
    Ok(())
}

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
    if let Err(error) = crate::analysis::plots::hist_plots(dir, hist) {
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

/// Merges parts computed over disjoint shard subsets, in the order given: the result equals one
/// pass over the parts' shards in that order.
pub fn merge(parts: Vec<Histograms>) -> anyhow::Result<Histograms> {
    let mut parts = parts.into_iter();
    let mut acc = parts.next().ok_or_else(|| anyhow!("nothing to merge"))?;
    acc.part = None;
    for (n, part) in parts.enumerate() {
        merge_into(&mut acc, part).with_context(|| format!("part {}", n + 2))?;
    }
    Ok(acc)
}

/// Appends `part` (computed over shards that follow `acc`'s) to `acc`.
pub fn merge_into(acc: &mut Histograms, part: Histograms) -> anyhow::Result<()> {
    if part.d_sae != acc.d_sae || part.top_m != acc.top_m {
        bail!(
            "d_sae {} / top-M {} differ from the first part's {} / {}",
            part.d_sae,
            part.top_m,
            acc.d_sae,
            acc.top_m
        );
    }
    if part.bins != acc.bins {
        bail!(
            "bin range {:?} differs from the first part's {:?}; run every part with the same --range LO,HI and --bins",
            part.bins,
            acc.bins
        );
    }
    if part.cooc_features != acc.cooc_features {
        bail!(
            "its co-occurrence features differ from the first part's; merge parts computed without --cooccurrence, or over the same feature set"
        );
    }
    for (a, b) in acc.cooc_counts.iter_mut().zip(&part.cooc_counts) {
        *a += b;
    }
    let shard_offset = acc.shards.len() as i32;
    for i in 0..acc.d_sae {
        acc.fire_count[i] += part.fire_count[i];
        acc.act_sum[i] += part.act_sum[i];
        acc.act_sumsq[i] += part.act_sumsq[i];
        acc.act_max[i] = acc.act_max[i].max(part.act_max[i]);
        // Stable merge of two lists sorted by value descending: ties keep the earlier
        // part's rows first, as one pass would.
        let m = acc.top_m;
        let range = i * m..(i + 1) * m;
        let a: Vec<usize> = range.clone().collect();
        let (mut ia, mut ib) = (0, 0);
        let mut merged = Vec::with_capacity(m);
        while merged.len() < m {
            let va = a.get(ia).map_or(-1.0, |&s| acc.top_values[s]);
            let vb = if ib < m {
                part.top_values[i * m + ib]
            } else {
                -1.0
            };
            if va < 0.0 && vb < 0.0 {
                break;
            }
            if vb > va {
                let s = i * m + ib;
                merged.push((
                    part.top_values[s],
                    part.top_shards[s] + shard_offset,
                    part.top_rows[s],
                    part.top_tokens[s],
                ));
                ib += 1;
            } else {
                let s = a[ia];
                merged.push((
                    acc.top_values[s],
                    acc.top_shards[s],
                    acc.top_rows[s],
                    acc.top_tokens[s],
                ));
                ia += 1;
            }
        }
        for (slot, s) in range.enumerate() {
            let (v, sh, r, t) = merged.get(slot).copied().unwrap_or((-1.0, -1, -1, -1));
            acc.top_values[s] = v;
            acc.top_shards[s] = sh;
            acc.top_rows[s] = r;
            acc.top_tokens[s] = t;
        }
    }
    for (a, b) in acc.bin_counts.iter_mut().zip(&part.bin_counts) {
        *a += b;
    }
    acc.rows += part.rows;
    acc.shards.extend(part.shards);
    Ok(())
}
