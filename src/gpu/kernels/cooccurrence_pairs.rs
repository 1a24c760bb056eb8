//! Co-occurrence over all pairs of features (shaders/cooccurrence_pairs.wgsl): joint counts of
//! every two features per unit (row or chunk), one block of count rows at a time, and a score
//! per pair for the per-feature TopK of partners.

use super::{check_len, dim};
use crate::gpu::bindings::cooccurrence_pairs::*;
use crate::gpu::error::{ensure, GpuResult};
use crate::gpu::params::PairCountParams;
use crate::gpu::{GpuBuffer, PipelineKey, Recorder, Shader};

const WG: u32 = 64;

fn key(entry: &'static str) -> PipelineKey {
    PipelineKey::new(Shader::CooccurrencePairs, entry).define("WG", WG)
}

/// Which features one launch counts or scores: rows `lo .. lo + rows` of the full
/// [d_sae, d_sae] matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairBlock {
    pub lo: usize,
    pub rows: usize,
    pub d_sae: usize,
}

impl PairBlock {
    /// Elements of the block's count (and score) buffer.
    pub fn len(&self) -> usize {
        self.rows * self.d_sae
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }
}

/// The statistic `pair_scores` computes (the shader's `measure`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PairMeasure {
    Phi = 0,
    Jaccard = 1,
    Npmi = 2,
}

/// One batch of units as lists of the features firing in each (CSR): unit u holds
/// `unit_features[unit_start[u] .. unit_start[u + 1]]`, and `entry_unit[e]` is the unit of
/// entry e.
pub struct UnitLists<'a> {
    pub entry_unit: &'a GpuBuffer,
    pub unit_start: &'a GpuBuffer,
    pub unit_features: &'a GpuBuffer,
    pub units: usize,
    pub entries: usize,
}

fn params(block: PairBlock) -> GpuResult<PairCountParams> {
    ensure(block.lo + block.rows <= block.d_sae, "pair_block", || {
        format!(
            "block {}..{} exceeds d_sae = {}",
            block.lo,
            block.lo + block.rows,
            block.d_sae
        )
    })?;
    Ok(PairCountParams {
        block_lo: dim("pair_block", "block start", block.lo)?,
        block_rows: dim("pair_block", "block rows", block.rows)?,
        d_sae: dim("pair_block", "d_sae", block.d_sae)?,
        ..Default::default()
    })
}

/// `counts[f - block.lo, g] += 1` for every two different entries f, g of one unit with f in
/// the block (`counts` [block.rows, d_sae] u32, cleared by the caller; it accumulates over a
/// whole pass).
pub fn launch_count_unit_pairs(
    rec: &mut Recorder<'_>,
    units: &UnitLists<'_>,
    block: PairBlock,
    counts: &GpuBuffer,
) -> GpuResult<()> {
    const KERNEL: &str = "count_unit_pairs";
    check_len(KERNEL, units.entry_unit, units.entries)?;
    check_len(KERNEL, units.unit_features, units.entries)?;
    check_len(KERNEL, units.unit_start, units.units + 1)?;
    check_len(KERNEL, counts, block.len())?;
    if units.entries == 0 || block.is_empty() {
        return Ok(());
    }
    let params = PairCountParams {
        entries: dim(KERNEL, "entries", units.entries)?,
        ..params(block)?
    };
    let grid = rec.threads_grid(units.entries, WG);
    rec.launch(
        &key(KERNEL),
        &params,
        &[
            (ENTRY_UNIT, units.entry_unit),
            (UNIT_START, units.unit_start),
            (UNIT_FEATURES, units.unit_features),
            (COUNTS, counts),
        ],
        grid,
    )
}

/// `scores` [block.rows, d_sae] from the block's `counts`, `feature_units` [d_sae] and the
/// number of units: the `measure` of each pair, 0 on the diagonal and where the joint count is
/// below `min_joint`.
#[allow(clippy::too_many_arguments)]
pub fn launch_pair_scores(
    rec: &mut Recorder<'_>,
    block: PairBlock,
    counts: &GpuBuffer,
    feature_units: &GpuBuffer,
    units: u64,
    measure: PairMeasure,
    min_joint: u32,
    scores: &GpuBuffer,
) -> GpuResult<()> {
    const KERNEL: &str = "pair_scores";
    check_len(KERNEL, counts, block.len())?;
    check_len(KERNEL, feature_units, block.d_sae)?;
    check_len(KERNEL, scores, block.len())?;
    dim(KERNEL, "block elements", block.len())?;
    if block.is_empty() {
        return Ok(());
    }
    let params = PairCountParams {
        measure: measure as u32,
        min_joint,
        units: units.max(1) as f32,
        ..params(block)?
    };
    let grid = rec.threads_grid(block.len(), WG);
    rec.launch(
        &key(KERNEL),
        &params,
        &[
            (COUNTS, counts),
            (FEATURE_UNITS, feature_units),
            (SCORES, scores),
        ],
        grid,
    )
}
