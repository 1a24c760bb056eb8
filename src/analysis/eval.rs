//! Reconstruction metrics of an SAE over a stream of activations, in one pass:
//! FVU (sparsify's definition, centred by the mean row of the evaluated set), MSE, L0, dead and
//! dense fractions, mean cosine of x and x̂, and relative reconstruction bias.

use serde::{Deserialize, Serialize};

use super::scan::{Consumer, Scales, Scan, Scanned};
use crate::gpu::kernels::reduce::launch_fire_counts;
use crate::gpu::{F16Overflow, Gpu, GpuBuffer, GpuResult, Matmul, MatmulChoice, Recorder};
use crate::sae::forward::ForwardBuffers;
use crate::sae::params::SaeParams;
use crate::sae::pass::ForwardPass;
use crate::sae::GpuSae;

/// A latent firing on more than this fraction of tokens counts as dense.
pub const DENSE_THRESHOLD: f64 = 0.1;

#[derive(Clone, Debug, Serialize)]
pub struct EvalSummary {
    pub rows: u64,
    /// Σ‖x − x̂‖² / Σ‖x − x̄‖².
    pub fvu: f64,
    /// Mean over rows of ‖x − x̂‖² / d_in (per element).
    pub mse: f64,
    /// Mean number of latents > 0 per row.
    pub l0: f64,
    /// Latents that never fired on the evaluated rows.
    pub dead_frac: f64,
    /// Latents that fired on more than 10% of rows.
    pub dense_frac: f64,
    /// Mean over rows of cos(x, x̂).
    pub mean_cosine: f64,
    /// E‖x̂‖² / E⟨x, x̂⟩: above 1 the SAE overshoots, below 1 it shrinks.
    pub rel_recon_bias: f64,
    /// ReLU / JumpReLU SAEs: non-zero latents beyond the per-row cap, left out of x̂.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_activations: Option<u64>,
}

/// Host-side f64 sums, fed one batch at a time. They are the sufficient statistics of every
/// figure in [`EvalSummary`], so `sae eval --json` records them and parts of a split job merge
/// exactly ([`EvalAccumulator::merge`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EvalAccumulator {
    d_in: usize,
    rows: u64,
    sse: f64,
    sum_x: Vec<f64>,
    sum_sq_x: f64,
    cosine_sum: f64,
    x_hat_sq: f64,
    x_dot_x_hat: f64,
    pub fire_counts: Vec<u64>,
    /// Thresholded SAEs: Σ non-zero latents (the true L0 numerator) and those past the cap.
    active_total: Option<u64>,
    dropped: u64,
}

impl EvalAccumulator {
    pub fn new(d_in: usize, d_sae: usize) -> Self {
        EvalAccumulator {
            d_in,
            rows: 0,
            sse: 0.0,
            sum_x: vec![0.0; d_in],
            sum_sq_x: 0.0,
            cosine_sum: 0.0,
            x_hat_sq: 0.0,
            x_dot_x_hat: 0.0,
            fire_counts: vec![0; d_sae],
            active_total: None,
            dropped: 0,
        }
    }

    /// Records true per-row active counts of a thresholded SAE kept to `cap` per row.
    pub fn add_active(&mut self, active: &[u32], cap: usize) {
        let total = self.active_total.get_or_insert(0);
        for &a in active {
            *total += u64::from(a);
            self.dropped += u64::from(a).saturating_sub(cap as u64);
        }
    }

    pub fn add(&mut self, x: &[f32], x_hat: &[f32], fired: &[u32]) {
        let d = self.d_in;
        for (row, row_hat) in x.chunks_exact(d).zip(x_hat.chunks_exact(d)) {
            let (mut xx, mut hh, mut xh, mut err) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
            for (c, (&a, &b)) in row.iter().zip(row_hat).enumerate() {
                let (a, b) = (f64::from(a), f64::from(b));
                self.sum_x[c] += a;
                xx += a * a;
                hh += b * b;
                xh += a * b;
                err += (a - b) * (a - b);
            }
            self.sse += err;
            self.sum_sq_x += xx;
            self.x_hat_sq += hh;
            self.x_dot_x_hat += xh;
            let denominator = (xx * hh).sqrt();
            self.cosine_sum += if denominator > 0.0 {
                xh / denominator
            } else {
                0.0
            };
            self.rows += 1;
        }
        for (total, &f) in self.fire_counts.iter_mut().zip(fired) {
            *total += u64::from(f);
        }
    }

    /// Adds another accumulator's rows (a later part of the same data).
    pub fn merge(&mut self, other: &EvalAccumulator) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.d_in == other.d_in && self.fire_counts.len() == other.fire_counts.len(),
            "d_in {} / d_sae {} differ from {} / {}",
            other.d_in,
            other.fire_counts.len(),
            self.d_in,
            self.fire_counts.len()
        );
        anyhow::ensure!(
            self.active_total.is_some() == other.active_total.is_some(),
            "one part counts capped activations and the other does not (different SAEs?)"
        );
        self.rows += other.rows;
        self.sse += other.sse;
        for (a, b) in self.sum_x.iter_mut().zip(&other.sum_x) {
            *a += b;
        }
        self.sum_sq_x += other.sum_sq_x;
        self.cosine_sum += other.cosine_sum;
        self.x_hat_sq += other.x_hat_sq;
        self.x_dot_x_hat += other.x_dot_x_hat;
        for (a, b) in self.fire_counts.iter_mut().zip(&other.fire_counts) {
            *a += b;
        }
        if let (Some(a), Some(b)) = (self.active_total.as_mut(), other.active_total) {
            *a += b;
        }
        self.dropped += other.dropped;
        Ok(())
    }

    pub fn summary(&self) -> EvalSummary {
        let n = self.rows.max(1) as f64;
        let mean_sq: f64 = self.sum_x.iter().map(|s| s * s).sum::<f64>() / n;
        let total_variance = (self.sum_sq_x - mean_sq).max(f64::MIN_POSITIVE);
        let d_sae = self.fire_counts.len().max(1) as f64;
        let fires: u64 = self.fire_counts.iter().sum();
        EvalSummary {
            rows: self.rows,
            fvu: self.sse / total_variance,
            mse: self.sse / (n * self.d_in as f64),
            l0: self.active_total.unwrap_or(fires) as f64 / n,
            dead_frac: self.fire_counts.iter().filter(|&&c| c == 0).count() as f64 / d_sae,
            dense_frac: self
                .fire_counts
                .iter()
                .filter(|&&c| c as f64 > DENSE_THRESHOLD * n)
                .count() as f64
                / d_sae,
            mean_cosine: self.cosine_sum / n,
            rel_recon_bias: self.x_hat_sq / self.x_dot_x_hat,
            dropped_activations: self.active_total.map(|_| self.dropped),
        }
    }
}

/// The eval figures of every batch of a scan: the reconstructions' sums and fire counts.
pub struct EvalConsumer {
    fired: GpuBuffer,
    /// Latents kept per row (the cap of thresholded SAEs).
    k: usize,
    pub acc: EvalAccumulator,
}

impl EvalConsumer {
    pub fn new(gpu: &Gpu, sae: &GpuSae) -> GpuResult<Self> {
        Ok(EvalConsumer {
            fired: gpu.storage::<u32>("eval_fired", sae.d_sae)?,
            k: sae.k,
            // What is compared: the reconstruction, or a transcoder's prediction of its target.
            acc: EvalAccumulator::new(sae.d_out, sae.d_sae),
        })
    }
}

impl Consumer for EvalConsumer {
    fn needs_reconstruction(&self) -> bool {
        true
    }

    fn record(
        &mut self,
        rec: &mut Recorder<'_>,
        fw: &ForwardBuffers,
        batch: &Scanned<'_>,
    ) -> GpuResult<()> {
        rec.clear(&self.fired);
        let entries = batch.rows * self.k;
        launch_fire_counts(rec, &fw.top_idx, &fw.top_val, entries, &self.fired)
    }

    fn consume(&mut self, pass: &ForwardPass<'_, '_>, batch: &Scanned<'_>) -> anyhow::Result<()> {
        let target = match (batch.y, pass.sae.transcoder.is_some()) {
            (Some(y), true) => y,
            (None, false) => batch.x,
            (None, true) => anyhow::bail!(
                "a transcoder is evaluated against its targets: give them with --target or --target-tensor"
            ),
            (Some(_), false) => anyhow::bail!(
                "targets were given for an SAE, which reconstructs its input: drop --target"
            ),
        };
        let x_hat = pass.reconstructions(batch.rows)?;
        let fired: Vec<u32> = pass.gpu.read(&self.fired)?;
        self.acc.add(target, &x_hat, &fired);
        if let Some(counts) = pass.active_counts(batch.rows)? {
            self.acc.add_active(&counts, self.k);
        }
        Ok(())
    }
}

/// The eval sums of `sae` over a stream of batches (inputs and targets divided by `scales`).
pub fn evaluate_stream(
    gpu: &Gpu,
    sae: &GpuSae,
    batch_rows: usize,
    stream: impl Iterator<Item = Result<crate::data::Batch, crate::data::DataError>>,
    scales: Scales,
    on_rows: impl FnMut(u64),
) -> anyhow::Result<EvalAccumulator> {
    let mut consumer = EvalConsumer::new(gpu, sae)?;
    let scan = Scan::new(gpu, sae, batch_rows, true)?;
    scan.run(stream, scales, &mut [&mut consumer], on_rows)?;
    Ok(consumer.acc)
}

/// How `sae eval` evaluates an SAE over shards; `sae frontier` uses the same, so its figures
/// are exactly `sae eval`'s.
#[derive(Clone, Copy, Debug)]
pub struct EvalOptions {
    pub batch_rows: usize,
    /// ReLU / JumpReLU SAEs: latents kept per row.
    pub cap: usize,
    pub skip_nonfinite: bool,
    /// How the encoder GEMM runs.
    pub matmul: MatmulChoice,
}

/// What [`evaluate`] found: the sums behind every figure and how the SAE ran.
pub struct Evaluated {
    pub stats: EvalAccumulator,
    /// Latents kept per row.
    pub cap: usize,
    pub matmul: Matmul,
    pub f16_overflow: F16Overflow,
}

/// Refuses to evaluate a transcoder without targets (its predictions are of something else
/// than its input) or an SAE with them, in one line.
pub fn check_targets(params: &SaeParams, has_targets: bool) -> anyhow::Result<()> {
    match (params.is_transcoder(), has_targets) {
        (true, false) => anyhow::bail!(
            "this is a transcoder ({} → {} values): evaluating it needs its targets, --target FILES… or --target-tensor NAME",
            params.d_in,
            params.d_out()
        ),
        (false, true) => anyhow::bail!(
            "this is an SAE, which reconstructs its input: --target and --target-tensor are for transcoders"
        ),
        _ => Ok(()),
    }
}

/// Every row of `shards` once, in file order, through `params` on the GPU; a transcoder's
/// predictions compared with `targets` (shard for shard beside `shards`).
pub fn evaluate(
    gpu: &Gpu,
    params: &SaeParams,
    shards: std::sync::Arc<Vec<crate::data::Shard>>,
    targets: Option<std::sync::Arc<Vec<crate::data::Shard>>>,
    options: EvalOptions,
    on_rows: impl FnMut(u64),
) -> anyhow::Result<Evaluated> {
    check_targets(params, targets.is_some())?;
    let mut sae = GpuSae::upload_with_cap(gpu, params, options.cap, options.batch_rows)?;
    sae.set_matmul(gpu, gpu.matmul(options.matmul)?)?;
    let mut stream_cfg = crate::data::StreamConfig::sequential(options.batch_rows);
    stream_cfg.skip_nonfinite = options.skip_nonfinite;
    let stream = crate::data::BatchStream::start_paired(shards, targets, stream_cfg)?;
    let stats = evaluate_stream(gpu, &sae, options.batch_rows, stream, Scales::NONE, on_rows)?;
    Ok(Evaluated {
        stats,
        cap: sae.k,
        matmul: sae.matmul(),
        f16_overflow: sae.f16_overflow(gpu)?,
    })
}
