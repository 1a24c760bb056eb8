//! Co-occurrence affinities (Li, Michaud, Tegmark et al. 2024, "The Geometry of Concepts"):
//! two features are related when they fire in the same unit of data: the same row (token), or
//! the same chunk of consecutive rows (a chunk of 256 tokens is roughly a passage of text).
//!
//! [`partners`] counts every pair of features over all d_sae² pairs on the GPU (blocks of count
//! rows within the binding limits, several passes over the shards when the whole matrix exceeds
//! the memory given) and keeps each feature's top-M partners by a statistic: the co-occurrence
//! kNN graph.

use std::sync::Arc;

use anyhow::bail;

use serde::Serialize;

use crate::analysis::scan::{Consumer, Scales, Scan, Scanned};
use crate::data::column::RowColumn;
use crate::data::{BatchStream, Shard, StreamConfig};
use crate::gpu::kernels::cooccurrence_pairs::{
    launch_count_unit_pairs, launch_pair_scores, PairBlock, PairMeasure, UnitLists,
};
use crate::gpu::kernels::topk::{launch_topk, MAX_K};
use crate::gpu::{Gpu, GpuBuffer, Recorder};
use crate::sae::pass::ForwardPass;
use crate::sae::GpuSae;

/// Which co-occurrence statistic becomes an affinity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CooccurrenceMeasure {
    /// Phi coefficient (the correlation of two binary variables), negative values read as 0.
    Phi,
    /// Jaccard index: units with both over units with either.
    Jaccard,
    /// Normalised pointwise mutual information, ln(p₁₂ / p₁p₂) / −ln p₁₂: a lift that does not
    /// favour rare pairs; negative values read as 0.
    Npmi,
}

impl CooccurrenceMeasure {
    fn kernel(self) -> PairMeasure {
        match self {
            CooccurrenceMeasure::Phi => PairMeasure::Phi,
            CooccurrenceMeasure::Jaccard => PairMeasure::Jaccard,
            CooccurrenceMeasure::Npmi => PairMeasure::Npmi,
        }
    }

    /// The statistic of a pair seen together in `joint` of `units` units, the two alone in
    /// `a` and `b` (f64; the GPU computes the same in f32).
    pub fn score(self, joint: f64, a: f64, b: f64, units: f64) -> f64 {
        let (pij, pi, pj) = (joint / units, a / units, b / units);
        match self {
            CooccurrenceMeasure::Phi => {
                let spread = pi * (1.0 - pi) * pj * (1.0 - pj);
                if spread > 0.0 {
                    (pij - pi * pj) / spread.sqrt()
                } else {
                    0.0
                }
            }
            CooccurrenceMeasure::Jaccard => {
                let either = pi + pj - pij;
                if either > 0.0 {
                    pij / either
                } else {
                    0.0
                }
            }
            CooccurrenceMeasure::Npmi => {
                if pij > 0.0 && pij < 1.0 {
                    (pij / (pi * pj)).ln() / -pij.ln()
                } else {
                    0.0
                }
            }
        }
    }
}

impl crate::choice::Choice for CooccurrenceMeasure {
    const CHOICES: &'static [(&'static str, Self, &'static str)] = &[
        (
            "phi",
            CooccurrenceMeasure::Phi,
            "Phi coefficient (the correlation of two binary variables), negative values read as 0",
        ),
        (
            "jaccard",
            CooccurrenceMeasure::Jaccard,
            "Jaccard index: units with both over units with either",
        ),
        (
            "npmi",
            CooccurrenceMeasure::Npmi,
            "Normalised pointwise mutual information, negative values read as 0",
        ),
    ];
}

/// What one unit of co-occurrence is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CooccurrenceUnit {
    /// The same row (token): features that fire on the same kind of token.
    Row,
    /// The same chunk of `--chunk` consecutive rows (in file order, across shard boundaries):
    /// features of the same passage or topic.
    Chunk,
    /// The same document: consecutive rows with the same value of the shards'
    /// `--document-column` (a new unit also starts with each shard).
    Document,
}

impl crate::choice::Choice for CooccurrenceUnit {
    const CHOICES: &'static [(&'static str, Self, &'static str)] = &[
        ("row", CooccurrenceUnit::Row, "The same row (token)"),
        (
            "chunk",
            CooccurrenceUnit::Chunk,
            "The same chunk of --chunk consecutive rows",
        ),
        (
            "document",
            CooccurrenceUnit::Document,
            "The same document (--document-column)",
        ),
    ];
}

/// How the co-occurrence kNN graph is counted and scored.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PartnerConfig {
    pub unit: CooccurrenceUnit,
    /// Rows per chunk with [`CooccurrenceUnit::Chunk`].
    pub chunk_rows: usize,
    /// A feature fires in a unit when one of its activations there exceeds this.
    pub fires_above: f32,
    pub measure: CooccurrenceMeasure,
    /// Partners kept per feature (M).
    pub partners: usize,
    /// Pairs seen together in fewer units score 0 (a pair of rare features seen together once
    /// is not evidence).
    pub min_joint: u32,
    /// GPU memory the joint counts may take at once (bytes); a matrix that needs more is
    /// counted in several passes over the shards.
    pub memory_bytes: u64,
}

/// Each feature's strongest co-occurrence partners, and the counts behind them.
#[derive(Clone, Debug)]
pub struct Partners {
    pub config: PartnerConfig,
    pub d_sae: usize,
    /// M: slots per feature.
    pub partners: usize,
    /// [d_sae, M] partner ids, best first (slots with score 0 are empty).
    pub index: Vec<u32>,
    /// [d_sae, M] scores (> 0 for a partner).
    pub score: Vec<f32>,
    /// Units counted, and per feature the units in which it fires.
    pub units: u64,
    pub feature_units: Vec<u32>,
    /// Joint counts of the extra pairs asked for (the decoder kNN graph's), in their order.
    pub pair_joint: Vec<u32>,
    /// Passes over the shards the counting took.
    pub passes: usize,
}

impl Partners {
    /// Feature `f`'s partners with their scores, best first.
    pub fn of(&self, f: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let at = f * self.partners;
        self.index[at..at + self.partners]
            .iter()
            .zip(&self.score[at..at + self.partners])
            .filter(|(_, &s)| s > 0.0)
            .map(|(&j, &s)| (j as usize, s))
    }

    /// The statistic of a pair from its joint count, in [0, 1] (negative values read as 0).
    pub fn affinity(&self, i: usize, j: usize, joint: u32) -> f64 {
        if joint < self.config.min_joint.max(1) || i == j {
            return 0.0;
        }
        self.config
            .measure
            .score(
                f64::from(joint),
                f64::from(self.feature_units[i]),
                f64::from(self.feature_units[j]),
                self.units as f64,
            )
            .clamp(0.0, 1.0)
    }
}

/// One batch's units as feature lists (CSR), built on the host from the sparse codes.
#[derive(Default)]
struct UnitBuilder {
    entry_unit: Vec<u32>,
    unit_start: Vec<u32>,
    unit_features: Vec<u32>,
    /// The unit being filled (a chunk may continue into the next batch).
    open: Vec<u32>,
    /// Per feature, the last unit it was added to (dedupes a chunk's features), +1.
    stamp: Vec<u64>,
    units_started: u64,
}

impl UnitBuilder {
    fn new(d_sae: usize) -> Self {
        UnitBuilder {
            unit_start: vec![0],
            stamp: vec![0; d_sae],
            units_started: 1,
            ..Default::default()
        }
    }

    fn add(&mut self, feature: u32) {
        let slot = &mut self.stamp[feature as usize];
        if *slot != self.units_started {
            *slot = self.units_started;
            self.open.push(feature);
        }
    }

    /// Closes the open unit into this batch's lists, counting it for each of its features.
    fn close(&mut self, feature_units: &mut [u64]) {
        let u = (self.unit_start.len() - 1) as u32;
        for &f in &self.open {
            self.entry_unit.push(u);
            self.unit_features.push(f);
            feature_units[f as usize] += 1;
        }
        self.unit_start.push(self.unit_features.len() as u32);
        self.open.clear();
        self.units_started += 1;
    }

    /// Takes this batch's closed units, leaving the open one.
    fn take(&mut self) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
        (
            std::mem::take(&mut self.entry_unit),
            std::mem::replace(&mut self.unit_start, vec![0]),
            std::mem::take(&mut self.unit_features),
        )
    }
}

/// Rows of one count block, and the blocks one pass over the shards holds, for `d_sae` within
/// the adapter's `binding` limit (bytes) and `memory_bytes`.
fn plan_blocks(binding: u64, d_sae: usize, memory_bytes: u64) -> (usize, usize) {
    let row_bytes = 4 * d_sae as u64;
    let binding = binding.max(row_bytes);
    let block_rows = ((binding / row_bytes) as usize).clamp(1, d_sae);
    let per_pass = (memory_bytes / (row_bytes * block_rows as u64)).max(1) as usize;
    (block_rows, per_pass)
}

/// Passes over the shards counting co-occurrence takes for `d_sae` features within `binding`
/// bytes per buffer and `memory_bytes` in all.
pub fn count_passes(binding: u64, d_sae: usize, memory_bytes: u64) -> usize {
    let (block_rows, per_pass) = plan_blocks(binding, d_sae, memory_bytes);
    d_sae.div_ceil(block_rows).div_ceil(per_pass)
}

/// Joint counts of every pair of features (i < j, non-zero only) and each feature's own count:
/// what one part of a split job writes, and what the parts sum to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SparseCounts {
    pub d_sae: usize,
    pub units: u64,
    pub feature_units: Vec<u64>,
    pub i: Vec<u32>,
    pub j: Vec<u32>,
    pub count: Vec<u32>,
}

impl SparseCounts {
    /// Adds another part's counts (the same features, other units).
    pub fn add(&mut self, other: &SparseCounts) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.d_sae == other.d_sae,
            "d_sae {} differs from {}",
            other.d_sae,
            self.d_sae
        );
        self.units += other.units;
        for (a, b) in self.feature_units.iter_mut().zip(&other.feature_units) {
            *a += b;
        }
        let mut merged: std::collections::BTreeMap<(u32, u32), u64> = Default::default();
        for n in 0..self.i.len() {
            *merged.entry((self.i[n], self.j[n])).or_default() += u64::from(self.count[n]);
        }
        for n in 0..other.i.len() {
            *merged.entry((other.i[n], other.j[n])).or_default() += u64::from(other.count[n]);
        }
        self.i.clear();
        self.j.clear();
        self.count.clear();
        for ((i, j), c) in merged {
            self.i.push(i);
            self.j.push(j);
            self.count.push(
                u32::try_from(c)
                    .map_err(|_| anyhow::anyhow!("a joint count exceeds the 32-bit counters"))?,
            );
        }
        Ok(())
    }
}

/// Where the joint counts come from.
pub enum CountSource<'a> {
    /// Streaming shards through an SAE.
    Shards {
        sae: &'a GpuSae,
        shards: Arc<Vec<Shard>>,
        documents: Option<&'a RowColumn>,
        batch_rows: usize,
    },
    /// The summed counts of the parts of a split job.
    Merged(&'a SparseCounts),
}

fn check_config(config: &PartnerConfig, documents: Option<&RowColumn>) -> anyhow::Result<()> {
    anyhow::ensure!(
        (config.unit == CooccurrenceUnit::Document) == documents.is_some(),
        "document units need a document column, and only they"
    );
    anyhow::ensure!(config.partners >= 1, "--partners must be at least 1");
    anyhow::ensure!(
        config.unit == CooccurrenceUnit::Row || config.chunk_rows >= 1,
        "--chunk must be at least 1"
    );
    Ok(())
}

/// Count blocks of `d_sae` rows for `gpu` and `memory_bytes`, grouped by pass.
fn blocks(gpu: &Gpu, d_sae: usize, memory_bytes: u64) -> (usize, Vec<Vec<PairBlock>>) {
    let (block_rows, per_pass) = plan_blocks(gpu.binding_limit(), d_sae, memory_bytes);
    let all: Vec<PairBlock> = (0..d_sae)
        .step_by(block_rows)
        .map(|lo| PairBlock {
            lo,
            rows: block_rows.min(d_sae - lo),
            d_sae,
        })
        .collect();
    (
        block_rows,
        all.chunks(per_pass).map(<[_]>::to_vec).collect(),
    )
}

/// One pass over the shards: adds the joint counts of `group`'s features into `counts` (one
/// buffer per block, cleared here) and returns the units and each feature's unit count.
#[allow(clippy::too_many_arguments)]
fn count_group(
    gpu: &Gpu,
    scan: &Scan<'_, '_>,
    shards: &Arc<Vec<Shard>>,
    config: &PartnerConfig,
    documents: Option<&RowColumn>,
    group: &[PairBlock],
    counts: &[GpuBuffer],
    on_rows: &mut dyn FnMut(u64),
) -> anyhow::Result<(u64, Vec<u64>)> {
    let mut rec = Recorder::new(gpu, "co-occurrence: clear counts");
    for c in &counts[..group.len()] {
        rec.clear(c);
    }
    rec.submit()?;
    let mut counter = UnitCounter::new(gpu, scan.pass.sae.d_sae, config, documents, group, counts);
    let stream = BatchStream::start(
        Arc::clone(shards),
        StreamConfig::sequential(scan.pass.capacity()),
    )?;
    scan.run(stream, Scales::NONE, &mut [&mut counter], on_rows)?;
    counter.finish()
}

/// Builds each batch's units from its codes on the host and counts their pairs on the GPU.
struct UnitCounter<'a> {
    gpu: &'a Gpu,
    config: &'a PartnerConfig,
    documents: Option<&'a RowColumn>,
    group: &'a [PairBlock],
    counts: &'a [GpuBuffer],
    builder: UnitBuilder,
    /// Units closed, and each feature's count of units.
    units: u64,
    tally: Vec<u64>,
    rows_in_unit: usize,
    /// The document (shard, id) of the open unit.
    document: Option<(u32, i64)>,
    /// Rows per unit (documents: until the next document starts).
    unit_rows: usize,
}

impl<'a> UnitCounter<'a> {
    fn new(
        gpu: &'a Gpu,
        d_sae: usize,
        config: &'a PartnerConfig,
        documents: Option<&'a RowColumn>,
        group: &'a [PairBlock],
        counts: &'a [GpuBuffer],
    ) -> Self {
        let unit_rows = match config.unit {
            CooccurrenceUnit::Row => 1,
            CooccurrenceUnit::Chunk => config.chunk_rows,
            CooccurrenceUnit::Document => usize::MAX,
        };
        UnitCounter {
            gpu,
            config,
            documents,
            group,
            counts,
            builder: UnitBuilder::new(d_sae),
            units: 0,
            tally: vec![0; d_sae],
            rows_in_unit: 0,
            document: None,
            unit_rows,
        }
    }

    fn close_unit(&mut self) {
        self.builder.close(&mut self.tally);
        self.rows_in_unit = 0;
        self.units += 1;
    }

    /// Counts the pairs of the units closed in this batch.
    fn count_batch(&mut self) -> anyhow::Result<()> {
        let (entry_unit, unit_start, unit_features) = self.builder.take();
        if unit_features.is_empty() {
            return Ok(());
        }
        let gpu = self.gpu;
        let entry_unit = gpu.upload("entry_unit", &entry_unit)?;
        let starts = unit_start.len() - 1;
        let unit_start = gpu.upload("unit_start", &unit_start)?;
        let entries = unit_features.len();
        let unit_features = gpu.upload("unit_features", &unit_features)?;
        let lists = UnitLists {
            entry_unit: &entry_unit,
            unit_start: &unit_start,
            unit_features: &unit_features,
            units: starts,
            entries,
        };
        let mut rec = Recorder::new(gpu, "co-occurrence: count pairs");
        for (block, c) in self.group.iter().zip(self.counts) {
            launch_count_unit_pairs(&mut rec, &lists, *block, c)?;
        }
        rec.submit()?;
        Ok(())
    }

    /// The trailing unit closed and counted: the units and each feature's unit count.
    fn finish(mut self) -> anyhow::Result<(u64, Vec<u64>)> {
        if self.rows_in_unit > 0 {
            self.close_unit();
            self.count_batch()?;
        }
        anyhow::ensure!(
            self.units <= u64::from(u32::MAX),
            "{} co-occurrence units exceed the 32-bit counters; use --cooccurrence-unit chunk",
            self.units
        );
        Ok((self.units, self.tally))
    }
}

impl Consumer for UnitCounter<'_> {
    fn consume(&mut self, pass: &ForwardPass<'_, '_>, batch: &Scanned<'_>) -> anyhow::Result<()> {
        let rows = batch.rows;
        let (idx, val) = pass.codes(rows)?;
        let k = idx.len() / rows.max(1);
        for (r, (row_idx, row_val)) in idx.chunks_exact(k).zip(val.chunks_exact(k)).enumerate() {
            // A document unit closes before the first row of the next document.
            if let Some(column) = self.documents {
                let (shard, row) = batch.batch.origin[r];
                let key = (shard, column.value(shard as usize, row as usize));
                if self.document.is_some_and(|d| d != key) && self.rows_in_unit > 0 {
                    self.close_unit();
                }
                self.document = Some(key);
            }
            for (&f, &v) in row_idx.iter().zip(row_val) {
                if v > self.config.fires_above {
                    self.builder.add(f);
                }
            }
            self.rows_in_unit += 1;
            if self.rows_in_unit == self.unit_rows {
                self.close_unit();
            }
        }
        self.count_batch()
    }
}

/// The joint counts of every pair over `shards`, read back as [`SparseCounts`]: one part of a
/// split job (`sae categories --part I/N`).
pub fn pair_counts(
    gpu: &Gpu,
    sae: &GpuSae,
    shards: Arc<Vec<Shard>>,
    config: PartnerConfig,
    documents: Option<&RowColumn>,
    batch_rows: usize,
    mut on_rows: impl FnMut(u64),
) -> anyhow::Result<SparseCounts> {
    check_config(&config, documents)?;
    let d_sae = sae.d_sae;
    let (block_rows, groups) = blocks(gpu, d_sae, config.memory_bytes);
    let scan = Scan::new(gpu, sae, batch_rows, false)?;
    let counts: Vec<GpuBuffer> = (0..groups[0].len())
        .map(|_| gpu.storage::<u32>("pair_counts", block_rows * d_sae))
        .collect::<Result<_, _>>()?;
    let mut out = SparseCounts {
        d_sae,
        ..Default::default()
    };
    for (n, group) in groups.iter().enumerate() {
        let (units, tally) = count_group(
            gpu,
            &scan,
            &shards,
            &config,
            documents,
            group,
            &counts,
            &mut on_rows,
        )?;
        if n == 0 {
            out.units = units;
            out.feature_units = tally;
        }
        for (block, c) in group.iter().zip(&counts) {
            let joint: Vec<u32> = gpu.read(c)?;
            for r in 0..block.rows {
                let i = block.lo + r;
                for j in i + 1..d_sae {
                    let v = joint[r * d_sae + j];
                    if v > 0 {
                        out.i.push(i as u32);
                        out.j.push(j as u32);
                        out.count.push(v);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Each feature's `config.partners` best partners by `config.measure` (a GPU TopK over each
/// row of scores) from the joint counts of every pair, counted on shards or summed from the
/// parts of a split job, and the joint counts of `extra_pairs`.
pub fn partners(
    gpu: &Gpu,
    source: CountSource<'_>,
    config: PartnerConfig,
    extra_pairs: &[(usize, usize)],
    mut on_rows: impl FnMut(u64),
) -> anyhow::Result<Partners> {
    let d_sae = match &source {
        CountSource::Shards { sae, documents, .. } => {
            check_config(&config, *documents)?;
            sae.d_sae
        }
        CountSource::Merged(c) => c.d_sae,
    };
    let m = config.partners.min(d_sae.saturating_sub(1)).clamp(1, MAX_K);
    let (block_rows, groups) = blocks(gpu, d_sae, config.memory_bytes);
    let scan = match &source {
        CountSource::Shards {
            sae, batch_rows, ..
        } => Some(Scan::new(gpu, sae, *batch_rows, false)?),
        CountSource::Merged(_) => None,
    };
    let buffers = PartnerBuffers::new(gpu, d_sae, block_rows, groups[0].len(), m)?;
    let mut out = Partners {
        config,
        d_sae,
        partners: m,
        index: vec![0u32; d_sae * m],
        score: vec![0f32; d_sae * m],
        units: 0,
        feature_units: Vec::new(),
        pair_joint: vec![0u32; extra_pairs.len()],
        passes: groups.len(),
    };
    for (group_no, group) in groups.iter().enumerate() {
        let (units, feature_units) = match (&source, &scan) {
            (
                CountSource::Shards {
                    shards, documents, ..
                },
                Some(scan),
            ) => {
                let counts = &buffers.counts;
                count_group(
                    gpu,
                    scan,
                    shards,
                    &config,
                    *documents,
                    group,
                    counts,
                    &mut on_rows,
                )?
            }
            (CountSource::Merged(c), _) => {
                buffers.write_merged(gpu, c, group)?;
                (c.units, c.feature_units.clone())
            }
            (CountSource::Shards { .. }, None) => bail!("a shard source without a scan"),
        };
        // Units are rebuilt identically on every pass; the feature counts are kept from the
        // first.
        if group_no == 0 {
            out.units = units;
            let narrow: Vec<u32> = feature_units
                .iter()
                .map(|&n| u32::try_from(n))
                .collect::<Result<_, _>>()
                .map_err(|_| anyhow::anyhow!("a feature's unit count exceeds 32 bits"))?;
            gpu.write(&buffers.feature_units, &narrow)?;
            out.feature_units = narrow;
        }
        for (block, c) in group.iter().zip(&buffers.counts) {
            buffers.score_block(gpu, *block, c, &config, &mut out)?;
            out.read_extra_pairs(gpu, *block, c, extra_pairs)?;
        }
    }
    Ok(out)
}

/// The GPU buffers of the partner search: one group's count blocks, a block's scores, its
/// rows' top partners, and each feature's unit count.
struct PartnerBuffers {
    counts: Vec<GpuBuffer>,
    scores: GpuBuffer,
    top_idx: GpuBuffer,
    top_val: GpuBuffer,
    feature_units: GpuBuffer,
}

impl PartnerBuffers {
    fn new(
        gpu: &Gpu,
        d_sae: usize,
        block_rows: usize,
        blocks: usize,
        m: usize,
    ) -> anyhow::Result<PartnerBuffers> {
        Ok(PartnerBuffers {
            counts: (0..blocks)
                .map(|_| gpu.storage::<u32>("pair_counts", block_rows * d_sae))
                .collect::<Result<_, _>>()?,
            scores: gpu.storage::<f32>("pair_scores", block_rows * d_sae)?,
            top_idx: gpu.storage::<u32>("partner_index", block_rows * m)?,
            top_val: gpu.storage::<f32>("partner_score", block_rows * m)?,
            feature_units: gpu.storage::<u32>("feature_units", d_sae)?,
        })
    }

    /// The summed counts of a split job written densely into the group's blocks.
    fn write_merged(&self, gpu: &Gpu, c: &SparseCounts, group: &[PairBlock]) -> anyhow::Result<()> {
        let d_sae = c.d_sae;
        for (block, buffer) in group.iter().zip(&self.counts) {
            let mut dense = vec![0u32; block.len()];
            let inside = |f: u32| (f as usize) >= block.lo && (f as usize) < block.lo + block.rows;
            for n in 0..c.i.len() {
                let (i, j) = (c.i[n], c.j[n]);
                if inside(i) {
                    dense[(i as usize - block.lo) * d_sae + j as usize] = c.count[n];
                }
                if inside(j) {
                    dense[(j as usize - block.lo) * d_sae + i as usize] = c.count[n];
                }
            }
            gpu.write(buffer, &dense)?;
        }
        Ok(())
    }

    /// A block's scores from its joint counts and each row's top partners, into `out`.
    fn score_block(
        &self,
        gpu: &Gpu,
        block: PairBlock,
        counts: &GpuBuffer,
        config: &PartnerConfig,
        out: &mut Partners,
    ) -> anyhow::Result<()> {
        let (d_sae, m) = (out.d_sae, out.partners);
        let mut rec = Recorder::new(gpu, "co-occurrence: partners");
        launch_pair_scores(
            &mut rec,
            block,
            counts,
            &self.feature_units,
            out.units,
            config.measure.kernel(),
            config.min_joint,
            &self.scores,
        )?;
        let (idx_buf, val_buf) = (&self.top_idx, &self.top_val);
        launch_topk(
            &mut rec,
            &self.scores,
            block.rows,
            d_sae,
            m,
            idx_buf,
            val_buf,
            None,
        )?;
        rec.submit()?;
        let idx: Vec<u32> = gpu.read(idx_buf)?;
        let val: Vec<f32> = gpu.read(val_buf)?;
        let range = block.lo * m..(block.lo + block.rows) * m;
        out.index[range.clone()].copy_from_slice(&idx[..block.rows * m]);
        out.score[range].copy_from_slice(&val[..block.rows * m]);
        Ok(())
    }
}

impl Partners {
    /// The joint counts of the `extra_pairs` whose first feature lies in `block`.
    fn read_extra_pairs(
        &mut self,
        gpu: &Gpu,
        block: PairBlock,
        counts: &GpuBuffer,
        extra_pairs: &[(usize, usize)],
    ) -> anyhow::Result<()> {
        let inside = |i: usize| i >= block.lo && i < block.lo + block.rows;
        let wanted: Vec<usize> = (0..extra_pairs.len())
            .filter(|&e| inside(extra_pairs[e].0))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let joint: Vec<u32> = gpu.read(counts)?;
        for e in wanted {
            let (i, j) = extra_pairs[e];
            self.pair_joint[e] = joint[(i - block.lo) * self.d_sae + j];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_follow_their_definitions() {
        let phi = |j, a, b| CooccurrenceMeasure::Phi.score(j, a, b, 10.0);
        let jaccard = |j, a, b| CooccurrenceMeasure::Jaccard.score(j, a, b, 10.0);
        let npmi = |j, a, b| CooccurrenceMeasure::Npmi.score(j, a, b, 10.0);
        // Always together: phi 1, Jaccard 1, NPMI 1.
        assert!((phi(4.0, 4.0, 4.0) - 1.0).abs() < 1e-12);
        assert!((jaccard(4.0, 4.0, 4.0) - 1.0).abs() < 1e-12);
        assert!((npmi(4.0, 4.0, 4.0) - 1.0).abs() < 1e-12);
        // Never together, each in half the units: phi −1, Jaccard 0.
        assert!((phi(0.0, 5.0, 5.0) + 1.0).abs() < 1e-12);
        assert_eq!(jaccard(0.0, 5.0, 5.0), 0.0);
        // Independent (2 of 10 and 5 of 10, together in 1): phi 0, Jaccard 1/6, NPMI 0.
        assert!(phi(1.0, 2.0, 5.0).abs() < 1e-12);
        assert!((jaccard(1.0, 2.0, 5.0) - 1.0 / 6.0).abs() < 1e-12);
        assert!(npmi(1.0, 2.0, 5.0).abs() < 1e-12);
        // A feature firing in every unit carries no information.
        assert_eq!(phi(3.0, 10.0, 3.0), 0.0);
    }
}
