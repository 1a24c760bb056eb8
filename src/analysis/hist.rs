//! `sae hist`'s statistics: per feature, fire counts, sums, maxima, log-spaced histograms and
//! top rows, streamed over shards on the GPU (one scan, a second for co-occurrence counts),
//! and mergeable: histograms of disjoint subsets merged in order equal one pass over all of
//! them (integers exactly, sums to rounding). The files are the job layer's
//! (run::outputs::hist_files).

use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};

use super::scan::{Consumer, Scales, Scan, Scanned};
use crate::data::parts::PartInfo;
use crate::data::{BatchStream, Shard, StreamConfig};
use crate::gpu::kernels::backward::{launch_reverse_index, BackwardShape, ReverseIndex};
use crate::gpu::kernels::hist::{
    launch_batch_stats, launch_bin_counts, launch_cooccurrence, launch_top_rows, LogBins,
};
use crate::gpu::{Gpu, GpuBuffer, GpuResult, LaunchCache, Recorder};
use crate::sae::forward::ForwardBuffers;
use crate::sae::pass::ForwardPass;
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
    pub fn empty(d_sae: usize, bins: LogBins, top_m: usize) -> Self {
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

/// One pass over `shards` (in order): every feature's statistics, and with
/// `config.cooccurrence` a second pass counting the most frequent features' co-occurrences.
pub fn compute(
    gpu: &Gpu,
    sae: &GpuSae,
    shards: Vec<Shard>,
    config: HistConfig,
    mut on_rows: impl FnMut(u64),
) -> anyhow::Result<Histograms> {
    check_config(&config)?;
    let entries: Vec<ShardEntry> = shards
        .iter()
        .map(|s| ShardEntry {
            path: s.path.display().to_string(),
            rows: s.rows,
        })
        .collect();
    let shards = Arc::new(shards);
    let scan = Scan::new(gpu, sae, config.batch_size, false)?;
    let stream = || {
        BatchStream::start(
            Arc::clone(&shards),
            StreamConfig::sequential(config.batch_size),
        )
    };
    let mut stats = StatsConsumer::new(gpu, sae, config)?;
    scan.run(stream()?, Scales::NONE, &mut [&mut stats], &mut on_rows)?;
    let mut hist = stats.finish(gpu)?;
    if config.cooccurrence > 0 {
        let mut pairs = PairsConsumer::new(gpu, sae, &hist, config)?;
        scan.run(stream()?, Scales::NONE, &mut [&mut pairs], &mut on_rows)?;
        pairs.finish(gpu, &mut hist)?;
    }
    hist.shards = entries;
    Ok(hist)
}

fn check_config(config: &HistConfig) -> anyhow::Result<()> {
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
    Ok(())
}

/// The reverse index of a batch of `rows` rows (rebuilt when the last batch is shorter).
fn index_for(gpu: &Gpu, index: &mut ReverseIndex, rows: usize) -> GpuResult<()> {
    if index.shape.rows != rows {
        let shape = BackwardShape {
            rows,
            ..index.shape
        };
        *index = ReverseIndex::new(gpu, shape)?;
    }
    Ok(())
}

/// The first pass: per feature, fire counts, sums, maxima, binned values and top rows.
struct StatsConsumer {
    config: HistConfig,
    d_sae: usize,
    k: usize,
    index: ReverseIndex,
    batch_stats: GpuBuffer,
    best_val: GpuBuffer,
    best_origin: GpuBuffer,
    row_origin: GpuBuffer,
    /// Allocated once the first batch fixes the bins.
    bins_buffer: Option<GpuBuffer>,
    stats_cache: LaunchCache,
    out: Option<Histograms>,
}

impl StatsConsumer {
    fn new(gpu: &Gpu, sae: &GpuSae, config: HistConfig) -> anyhow::Result<StatsConsumer> {
        let d_sae = sae.d_sae;
        let shape = BackwardShape {
            rows: config.batch_size,
            d_in: sae.d_in,
            d_out: sae.d_out,
            d_sae,
            k: sae.k,
        };
        let best = d_sae * config.top_m;
        Ok(StatsConsumer {
            config,
            d_sae,
            k: sae.k,
            index: ReverseIndex::new(gpu, shape)?,
            batch_stats: gpu.storage::<f32>("batch_stats", 4 * d_sae)?,
            best_val: gpu.upload("best_values", &vec![-1.0f32; best])?,
            best_origin: gpu.upload("best_origin", &vec![u32::MAX; 3 * best])?,
            row_origin: gpu.storage::<u32>("row_origin", 3 * config.batch_size)?,
            bins_buffer: None,
            stats_cache: LaunchCache::default(),
            out: None,
        })
    }

    /// The histograms' bins, from `--range` or the first batch's largest activation.
    fn start(&mut self, pass: &ForwardPass<'_, '_>, rows: usize) -> anyhow::Result<()> {
        let (lo, hi) = match self.config.range {
            Some(range) => range,
            None => {
                let values: Vec<f32> = pass.gpu.read(&pass.fw.top_val)?;
                let max = values[..rows * self.k]
                    .iter()
                    .copied()
                    .fold(0.0f32, f32::max);
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
            bins: self.config.bins,
        };
        let count = self.d_sae * self.config.bins;
        self.bins_buffer = Some(pass.gpu.storage::<u32>("bin_counts", count)?);
        self.out = Some(Histograms::empty(self.d_sae, bins, self.config.top_m));
        Ok(())
    }

    /// The statistics read back: bin counts and top rows with their origins.
    fn finish(self, gpu: &Gpu) -> anyhow::Result<Histograms> {
        let mut hist = self
            .out
            .ok_or_else(|| anyhow!("the input shards hold no rows"))?;
        if let Some(bins) = &self.bins_buffer {
            let counts: Vec<u32> = gpu.read(bins)?;
            hist.bin_counts = counts.into_iter().map(u64::from).collect();
        }
        hist.top_values = gpu.read(&self.best_val)?;
        let origin: Vec<u32> = gpu.read(&self.best_origin)?;
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
}

impl Consumer for StatsConsumer {
    fn record(
        &mut self,
        rec: &mut Recorder<'_>,
        fw: &ForwardBuffers,
        batch: &Scanned<'_>,
    ) -> GpuResult<()> {
        let gpu = rec.gpu();
        index_for(gpu, &mut self.index, batch.rows)?;
        let b = batch.batch;
        let origin: Vec<u32> = b
            .origin
            .iter()
            .enumerate()
            .flat_map(|(r, &(shard, row))| {
                [shard, row, b.tokens.get(r).map_or(u32::MAX, |&t| t as u32)]
            })
            .collect();
        gpu.write(&self.row_origin, &origin)?;
        launch_reverse_index(rec, &fw.top_idx, &self.index)
    }

    fn consume(&mut self, pass: &ForwardPass<'_, '_>, batch: &Scanned<'_>) -> anyhow::Result<()> {
        let (gpu, rows) = (pass.gpu, batch.rows);
        if self.out.is_none() {
            self.start(pass, rows)?;
        }
        let (Some(hist), Some(bins)) = (self.out.as_mut(), self.bins_buffer.as_ref()) else {
            bail!("histogram buffers missing");
        };
        let fw = &pass.fw;
        let mut rec = Recorder::cached(gpu, "hist stats", &self.stats_cache);
        launch_batch_stats(&mut rec, &self.index, &fw.top_val, &self.batch_stats)?;
        let (idx, val) = (&fw.top_idx, &fw.top_val);
        launch_bin_counts(&mut rec, &self.index, idx, val, hist.bins, bins)?;
        let m = self.config.top_m;
        let origin = &self.row_origin;
        launch_top_rows(
            &mut rec,
            &self.index,
            val,
            origin,
            m,
            &self.best_val,
            &self.best_origin,
        )?;
        rec.submit()?;
        let stats: Vec<f32> = gpu.read(&self.batch_stats)?;
        for (i, s) in stats.chunks_exact(4).enumerate() {
            hist.fire_count[i] += u64::from(s[0].to_bits());
            hist.act_sum[i] += f64::from(s[1]);
            hist.act_sumsq[i] += f64::from(s[2]);
            hist.act_max[i] = hist.act_max[i].max(s[3]);
        }
        hist.rows += rows as u64;
        Ok(())
    }
}

/// The second pass: pair counts between the `config.cooccurrence` most frequent features.
struct PairsConsumer {
    /// The tracked features, most frequent first.
    order: Vec<usize>,
    index: ReverseIndex,
    slot_buffer: GpuBuffer,
    pairs: GpuBuffer,
}

impl PairsConsumer {
    fn new(
        gpu: &Gpu,
        sae: &GpuSae,
        hist: &Histograms,
        config: HistConfig,
    ) -> anyhow::Result<PairsConsumer> {
        let d_sae = sae.d_sae;
        let mut order: Vec<usize> = (0..d_sae).collect();
        order.sort_by(|&a, &b| hist.fire_count[b].cmp(&hist.fire_count[a]).then(a.cmp(&b)));
        order.truncate(config.cooccurrence.min(d_sae));
        let n = order.len();
        let mut slot_of = vec![u32::MAX; d_sae];
        for (slot, &feature) in order.iter().enumerate() {
            slot_of[feature] = slot as u32;
        }
        let shape = BackwardShape {
            rows: config.batch_size,
            d_in: sae.d_in,
            d_out: sae.d_out,
            d_sae,
            k: sae.k,
        };
        Ok(PairsConsumer {
            slot_buffer: gpu.upload("cooc_slot_of", &slot_of)?,
            pairs: gpu.storage::<u32>("cooc_pairs", n * n)?,
            index: ReverseIndex::new(gpu, shape)?,
            order,
        })
    }

    /// The counts read back into `hist`: the diagonal holds each feature's fire count.
    fn finish(self, gpu: &Gpu, hist: &mut Histograms) -> anyhow::Result<()> {
        let n = self.order.len();
        let upper: Vec<u32> = gpu.read(&self.pairs)?;
        let mut counts = vec![0u64; n * n];
        for a in 0..n {
            counts[a * n + a] = hist.fire_count[self.order[a]];
            for b in a + 1..n {
                let c = u64::from(upper[a * n + b]);
                counts[a * n + b] = c;
                counts[b * n + a] = c;
            }
        }
        hist.cooc_features = self.order.iter().map(|&f| f as u32).collect();
        hist.cooc_counts = counts;
        Ok(())
    }
}

impl Consumer for PairsConsumer {
    fn record(
        &mut self,
        rec: &mut Recorder<'_>,
        fw: &ForwardBuffers,
        batch: &Scanned<'_>,
    ) -> GpuResult<()> {
        index_for(rec.gpu(), &mut self.index, batch.rows)?;
        let n = self.order.len();
        let (idx, val) = (&fw.top_idx, &fw.top_val);
        launch_cooccurrence(
            rec,
            &self.index,
            idx,
            val,
            &self.slot_buffer,
            n,
            &self.pairs,
        )
    }

    fn consume(&mut self, _pass: &ForwardPass<'_, '_>, _batch: &Scanned<'_>) -> anyhow::Result<()> {
        Ok(())
    }
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
