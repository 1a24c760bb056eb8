//! Feature statistics for `sae hist`: per-latent batch statistics, log-spaced activation
//! histograms and running top-M rows, all driven by the backward pass's reverse index.

use super::backward::ReverseIndex;
use super::{check_len, dim};
use crate::gpu::bindings::hist::*;
use crate::gpu::error::{ensure, GpuResult};
use crate::gpu::params::HistParams;
use crate::gpu::{GpuBuffer, PipelineKey, Recorder, Shader};

const WG: u32 = 64;

/// Log-spaced histogram bins over `[lo, hi]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogBins {
    pub lo: f32,
    pub hi: f32,
    pub bins: usize,
}

impl LogBins {
    /// The `bins + 1` edges, lo·(hi/lo)^(i/bins).
    pub fn edges(&self) -> Vec<f32> {
        let (lo, hi) = (f64::from(self.lo), f64::from(self.hi));
        (0..=self.bins)
            .map(|i| (lo * (hi / lo).powf(i as f64 / self.bins as f64)) as f32)
            .collect()
    }
}

fn key(entry: &'static str, top_m: usize) -> PipelineKey {
    PipelineKey::new(Shader::Hist, entry)
        .define("WG", WG)
        .define("TOP_M", top_m.max(1) as u32)
}

fn params(index: &ReverseIndex, bins: Option<LogBins>) -> GpuResult<HistParams> {
    let s = index.shape;
    let (log_lo, log_span, n_bins) = match bins {
        Some(b) => {
            let lo = f64::from(b.lo).ln();
            (lo as f32, (f64::from(b.hi).ln() - lo) as f32, b.bins)
        }
        None => (0.0, 1.0, 1),
    };
    Ok(HistParams {
        d_sae: dim("hist", "d_sae", s.d_sae)?,
        k: dim("hist", "k", s.k)?,
        entries: dim("hist", "entries", s.entries())?,
        bins: dim("hist", "bins", n_bins)?,
        log_lo,
        log_span,
        rows: dim("hist", "rows", s.rows)?,
        tracked: 0,
    })
}

/// `batch_stats[i] = (fires as u32 bits, Σv, Σv², max v)` over this batch (v > 0 only).
pub fn launch_batch_stats(
    rec: &mut Recorder<'_>,
    index: &ReverseIndex,
    top_val: &GpuBuffer,
    batch_stats: &GpuBuffer,
) -> GpuResult<()> {
    let s = index.shape;
    check_len("batch_stats", top_val, s.entries())?;
    check_len("batch_stats", batch_stats, 4 * s.d_sae)?;
    let params = params(index, None)?;
    let grid = rec.threads_grid(s.d_sae, WG);
    rec.launch(
        &key("batch_stats_per_latent", 1),
        &params,
        &[
            (TOP_VAL, top_val),
            (OFFSETS, &index.offsets),
            (REVERSE_INDEX, &index.entries),
            (BATCH_STATS, batch_stats),
        ],
        grid,
    )
}

/// Adds each firing entry to `bins[latent, b]` ([d_sae, bins] u32, not cleared here).
pub fn launch_bin_counts(
    rec: &mut Recorder<'_>,
    index: &ReverseIndex,
    top_idx: &GpuBuffer,
    top_val: &GpuBuffer,
    log_bins: LogBins,
    bins: &GpuBuffer,
) -> GpuResult<()> {
    let s = index.shape;
    ensure(
        log_bins.bins >= 1 && log_bins.lo > 0.0 && log_bins.hi > log_bins.lo,
        "bin_counts",
        || format!("bins must be ≥ 1 over 0 < lo < hi, got {log_bins:?}"),
    )?;
    check_len("bin_counts", top_idx, s.entries())?;
    check_len("bin_counts", top_val, s.entries())?;
    check_len("bin_counts", bins, s.d_sae * log_bins.bins)?;
    let params = params(index, Some(log_bins))?;
    let grid = rec.threads_grid(s.entries(), WG);
    rec.launch(
        &key("bin_counts", 1),
        &params,
        &[(TOP_IDX, top_idx), (TOP_VAL, top_val), (BINS, bins)],
        grid,
    )
}

/// Merges this batch into the running top-`top_m` lists: `best_val` [d_sae, M] (start at −1),
/// `best_origin` [d_sae, M, 3] (shard, row, token) from `row_origin` [rows, 3].
pub fn launch_top_rows(
    rec: &mut Recorder<'_>,
    index: &ReverseIndex,
    top_val: &GpuBuffer,
    row_origin: &GpuBuffer,
    top_m: usize,
    best_val: &GpuBuffer,
    best_origin: &GpuBuffer,
) -> GpuResult<()> {
    let s = index.shape;
    ensure(top_m >= 1, "top_rows", || "top-M needs M ≥ 1".to_string())?;
    check_len("top_rows", top_val, s.entries())?;
    check_len("top_rows", row_origin, 3 * s.rows)?;
    check_len("top_rows", best_val, s.d_sae * top_m)?;
    check_len("top_rows", best_origin, 3 * s.d_sae * top_m)?;
    let params = params(index, None)?;
    let grid = rec.threads_grid(s.d_sae, WG);
    rec.launch(
        &key("top_rows", top_m),
        &params,
        &[
            (TOP_VAL, top_val),
            (OFFSETS, &index.offsets),
            (REVERSE_INDEX, &index.entries),
            (ROW_ORIGIN, row_origin),
            (BEST_VAL, best_val),
            (BEST_ORIGIN, best_origin),
        ],
        grid,
    )
}

/// Adds, for each row, every pair of its firing latents that are both tracked:
/// `pairs[a, b] += 1` for slots a < b (`slot_of` [d_sae], u32::MAX for untracked latents;
/// `pairs` [tracked, tracked] u32, upper triangle, not cleared here).
pub fn launch_cooccurrence(
    rec: &mut Recorder<'_>,
    index: &ReverseIndex,
    top_idx: &GpuBuffer,
    top_val: &GpuBuffer,
    slot_of: &GpuBuffer,
    tracked: usize,
    pairs: &GpuBuffer,
) -> GpuResult<()> {
    let s = index.shape;
    check_len("cooccurrence", top_idx, s.entries())?;
    check_len("cooccurrence", top_val, s.entries())?;
    check_len("cooccurrence", slot_of, s.d_sae)?;
    check_len("cooccurrence", pairs, tracked * tracked)?;
    let mut params = params(index, None)?;
    params.tracked = dim("cooccurrence", "tracked features", tracked)?;
    let grid = rec.threads_grid(s.rows, WG);
    rec.launch(
        &key("cooccurrence", 1),
        &params,
        &[
            (TOP_IDX, top_idx),
            (TOP_VAL, top_val),
            (SLOT_OF, slot_of),
            (PAIRS, pairs),
        ],
        grid,
    )
}
