//! Reductions for losses and metrics: sums of squared error, centred variance, per-row L0 and
//! per-latent fire counts. Float sums are two-stage in a fixed order (deterministic).

use super::{check_len, dim};
use crate::gpu::bindings::reduce::*;
use crate::gpu::dispatch::Grid;
use crate::gpu::error::GpuResult;
use crate::gpu::params::ReduceParams;
use crate::gpu::{Gpu, GpuBuffer, PipelineKey, Recorder, Shader};

const WG: u32 = 256;
/// Workgroups in the first stage of a float sum; the second stage is one workgroup.
const MAX_PARTIALS: usize = 1024;

fn key(entry: &'static str) -> PipelineKey {
    PipelineKey::new(Shader::Reduce, entry).define("WG", WG)
}

/// Scratch for two-stage sums.
pub struct Reducer {
    partials: GpuBuffer,
}

impl Reducer {
    pub fn new(gpu: &Gpu) -> GpuResult<Self> {
        Ok(Reducer {
            partials: gpu.storage::<f32>("reduce_partials", MAX_PARTIALS)?,
        })
    }

    fn partial_count(n: usize) -> usize {
        n.div_ceil(WG as usize).clamp(1, MAX_PARTIALS)
    }

    fn finish(
        &self,
        rec: &mut Recorder<'_>,
        params: ReduceParams,
        stats: &GpuBuffer,
    ) -> GpuResult<()> {
        rec.launch(
            &key("finish_sum"),
            &params,
            &[(PARTIAL_OUT, &self.partials), (STATS, stats)],
            Grid::new(1, 1, 1),
        )
    }

    /// `stats[slot] = Σ_i (a[i] − b[i])²` over the first `n` elements.
    pub fn launch_sum_sq_diff(
        &self,
        rec: &mut Recorder<'_>,
        a: &GpuBuffer,
        b: &GpuBuffer,
        n: usize,
        stats: &GpuBuffer,
        slot: usize,
    ) -> GpuResult<()> {
        check_len("sum_sq_diff_partials", b, n)?;
        self.sum_of_squares(
            rec,
            "sum_sq_diff_partials",
            &[(A, a), (B, b)],
            n,
            stats,
            slot,
            ReduceParams::default(),
        )
    }

    /// `stats[slot] = Σ_i a[i]²` over the first `n` elements.
    pub fn launch_sum_sq(
        &self,
        rec: &mut Recorder<'_>,
        a: &GpuBuffer,
        n: usize,
        stats: &GpuBuffer,
        slot: usize,
    ) -> GpuResult<()> {
        self.sum_of_squares(
            rec,
            "sum_sq_partials",
            &[(A, a)],
            n,
            stats,
            slot,
            ReduceParams::default(),
        )
    }

    /// The two stages of a flat sum: `entry` writes per-workgroup partials over `inputs`
    /// (binding 1 is the n-element input), then one workgroup adds them into `stats[slot]`.
    /// `base` carries any further parameters the entry reads.
    #[allow(clippy::too_many_arguments)]
    fn sum_of_squares(
        &self,
        rec: &mut Recorder<'_>,
        entry: &'static str,
        inputs: &[(u32, &GpuBuffer)],
        n: usize,
        stats: &GpuBuffer,
        slot: usize,
        base: ReduceParams,
    ) -> GpuResult<()> {
        if let Some((_, first)) = inputs.first() {
            check_len(entry, first, n)?;
        }
        check_len(entry, stats, slot + 1)?;
        let partials = Self::partial_count(n);
        let params = ReduceParams {
            n: dim(entry, "n", n)?,
            slot: slot as u32,
            partials: partials as u32,
            ..base
        };
        let mut bindings = inputs.to_vec();
        bindings.push((PARTIAL_OUT, &self.partials));
        rec.launch(
            &key(entry),
            &params,
            &bindings,
            Grid::new(partials as u32, 1, 1),
        )?;
        self.finish(rec, params, stats)
    }

    /// `stats[slot] = Σ_r ‖x[r] − x̄‖²`, x̄ the mean row; `col_mean` ([cols]) receives x̄.
    #[allow(clippy::too_many_arguments)]
    pub fn launch_centered_sq(
        &self,
        rec: &mut Recorder<'_>,
        x: &GpuBuffer,
        rows: usize,
        cols: usize,
        col_mean: &GpuBuffer,
        stats: &GpuBuffer,
        slot: usize,
    ) -> GpuResult<()> {
        check_len("column_mean", x, rows * cols)?;
        check_len("column_mean", col_mean, cols)?;
        let base = ReduceParams {
            n: dim("column_mean", "n", rows * cols)?,
            rows: dim("column_mean", "rows", rows)?,
            cols: dim("column_mean", "cols", cols)?,
            ..Default::default()
        };
        let grid = rec.threads_grid(cols, WG);
        rec.launch(
            &key("column_mean"),
            &base,
            &[(A, x), (COL_MEAN, col_mean)],
            grid,
        )?;
        let inputs = [(A, x), (COL_MEAN, col_mean)];
        self.sum_of_squares(
            rec,
            "centered_sq_partials",
            &inputs,
            rows * cols,
            stats,
            slot,
            base,
        )
    }
}

/// `row_l0[r]` = number of the row's k values that are > 0.
pub fn launch_row_l0(
    rec: &mut Recorder<'_>,
    top_val: &GpuBuffer,
    rows: usize,
    k: usize,
    row_l0: &GpuBuffer,
) -> GpuResult<()> {
    const KERNEL: &str = "row_l0";
    check_len(KERNEL, top_val, rows * k)?;
    check_len(KERNEL, row_l0, rows)?;
    let params = ReduceParams {
        rows: dim(KERNEL, "rows", rows)?,
        k: dim(KERNEL, "k", k)?,
        ..Default::default()
    };
    let grid = rec.threads_grid(rows, WG);
    rec.launch(
        &key(KERNEL),
        &params,
        &[(TOP_VAL, top_val), (L0_OUT, row_l0)],
        grid,
    )
}

/// Adds to `fire_counts[i]` (u32, not cleared here) how many of the `entries` chose latent i
/// with a positive value.
pub fn launch_fire_counts(
    rec: &mut Recorder<'_>,
    top_idx: &GpuBuffer,
    top_val: &GpuBuffer,
    entries: usize,
    fire_counts: &GpuBuffer,
) -> GpuResult<()> {
    const KERNEL: &str = "fire_counts";
    check_len(KERNEL, top_idx, entries)?;
    check_len(KERNEL, top_val, entries)?;
    let params = ReduceParams {
        n: dim(KERNEL, "entries", entries)?,
        ..Default::default()
    };
    let grid = rec.threads_grid(entries, WG);
    rec.launch(
        &key(KERNEL),
        &params,
        &[
            (TOP_VAL, top_val),
            (TOP_IDX, top_idx),
            (FIRE_COUNT, fire_counts),
        ],
        grid,
    )
}

/// `since_fired[i]` ← 0 where `batch_fired[i] > 0`, else += `rows` (saturating).
pub fn launch_update_dead(
    rec: &mut Recorder<'_>,
    batch_fired: &GpuBuffer,
    since_fired: &GpuBuffer,
    d_sae: usize,
    rows: usize,
) -> GpuResult<()> {
    const KERNEL: &str = "update_dead";
    check_len(KERNEL, batch_fired, d_sae)?;
    check_len(KERNEL, since_fired, d_sae)?;
    let params = ReduceParams {
        n: dim(KERNEL, "d_sae", d_sae)?,
        rows: dim(KERNEL, "rows", rows)?,
        ..Default::default()
    };
    let grid = rec.threads_grid(d_sae, WG);
    rec.launch(
        &key(KERNEL),
        &params,
        &[(FIRE_COUNT, batch_fired), (SINCE_FIRED, since_fired)],
        grid,
    )
}

/// `eligible[i] = since_fired[i] > threshold` and `dead_count[0]` (cleared here) = their number.
pub fn launch_dead_mask(
    rec: &mut Recorder<'_>,
    since_fired: &GpuBuffer,
    eligible: &GpuBuffer,
    dead_count: &GpuBuffer,
    d_sae: usize,
    threshold: u32,
) -> GpuResult<()> {
    const KERNEL: &str = "dead_mask";
    check_len(KERNEL, since_fired, d_sae)?;
    check_len(KERNEL, eligible, d_sae)?;
    check_len(KERNEL, dead_count, 1)?;
    let params = ReduceParams {
        n: dim(KERNEL, "d_sae", d_sae)?,
        threshold,
        ..Default::default()
    };
    rec.clear(dead_count);
    let grid = rec.threads_grid(d_sae, WG);
    rec.launch(
        &key(KERNEL),
        &params,
        &[
            (SINCE_FIRED, since_fired),
            (ELIGIBLE, eligible),
            (DEAD_COUNT, dead_count),
        ],
        grid,
    )
}

/// `stats[slot] = min(dead_count / k_aux, 1)`.
pub fn launch_aux_scale(
    rec: &mut Recorder<'_>,
    dead_count: &GpuBuffer,
    stats: &GpuBuffer,
    slot: usize,
    k_aux: usize,
) -> GpuResult<()> {
    const KERNEL: &str = "aux_scale";
    check_len(KERNEL, stats, slot + 1)?;
    let params = ReduceParams {
        k: dim(KERNEL, "k_aux", k_aux.max(1))?,
        slot: dim(KERNEL, "slot", slot)?,
        ..Default::default()
    };
    rec.launch(
        &key(KERNEL),
        &params,
        &[(STATS, stats), (DEAD_COUNT, dead_count)],
        Grid::new(1, 1, 1),
    )
}
