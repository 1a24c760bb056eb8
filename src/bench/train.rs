//! `sae bench train`: steps of the real trainer (the code `sae train` runs) on synthetic shards
//! streamed through the real data path: throughput after warm-up, host time per step, GPU
//! time per stage from timestamps, the GPU's busy fraction, allocations in steady state and
//! peak GPU memory against the minimum a run needs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::kernels::BenchShape;
use super::AdapterRecord;
use crate::data::{open_shards, ActDtype, BatchStream, StreamConfig};
use crate::gpu::kernels::encoder::EncoderShape;
use crate::gpu::kernels::optim::AdamConfig;
use crate::gpu::tune::tiles_for;
use crate::gpu::{Gpu, Matmul};
use crate::io::{write_safetensors, TensorOut};
use crate::sae::arch::{build_trainer, ArchSettings, Architecture, ModelConfig, TrainerOptions};
use crate::sae::trainer::{AuxKConfig, Feed, MemberStep};

/// How to run the benchmark.
#[derive(Clone, Copy, Debug)]
pub struct TrainBench {
    pub shape: BenchShape,
    /// What is trained; the shape's K is k for the TopK family and the cap on the codes per row
    /// for ReLU and JumpReLU (with `sae train`'s defaults: λ 1, clipping at 1, Matryoshka's
    /// default prefixes).
    pub architecture: Architecture,
    /// Steps before measuring (pipelines compiled, caches warm).
    pub warmup: usize,
    /// Steps measured for throughput and host time.
    pub steps: usize,
    /// Further steps with every dispatch timed (per-stage GPU time).
    pub timed_steps: usize,
    /// dtype of the synthetic shards (f16 / bf16 go to the GPU as stored).
    pub dtype: ActDtype,
    /// Log metrics every this many steps, as `sae train --log-every` (10 by default).
    pub log_every: usize,
    /// How the encoder GEMM runs.
    pub matmul: Matmul,
}

/// One JSON line of `sae bench train --json`.
#[derive(Clone, Debug, Serialize)]
pub struct TrainBenchRecord {
    pub bench: &'static str,
    pub architecture: &'static str,
    /// `f32`, or `f16` on the matrix units (its f16 copy of W_enc refreshed every step, in
    /// the optimiser stage).
    pub matmul: &'static str,
    pub shape: String,
    pub dtype: String,
    pub steps: usize,
    pub tokens_per_s: f64,
    /// Wall time per measured step.
    pub ms_per_step: f64,
    /// Host work per step: uploading, recording, reading metrics (without the waits for the
    /// GPU to catch up or for the reader thread's next batch, and without `submit`).
    pub host_ms_per_step: f64,
    pub host_fraction: f64,
    /// Time inside `queue.submit` per step: small on a GPU; on a CPU driver (lavapipe) the
    /// work itself runs there.
    pub submit_ms_per_step: f64,
    /// Waiting for the shard reader's next batch, per step (0 when the data keeps up).
    pub data_wait_ms_per_step: f64,
    /// Sum of every dispatch's GPU time in a step (timed steps).
    pub gpu_ms_per_step: f64,
    /// GPU time per stage (input, encode, select, decode, backward, optimiser, other).
    pub stage_ms: BTreeMap<String, f64>,
    /// GPU time per stage and kernel ("stage/kernel"), summed over its dispatches in a step.
    pub kernel_ms: BTreeMap<String, f64>,
    /// GPU time / wall time over the measured steps.
    pub gpu_busy_fraction: f64,
    pub buffers_created_in_steady_state: u64,
    pub bind_groups_created_in_steady_state: u64,
    /// The most bytes of GPU buffers alive at once during the run.
    pub peak_gpu_bytes: u64,
    /// The encoder GEMM's tiles: the f32 shape (the cached choice for this adapter, or the
    /// default), or the f16 layout when `matmul` is f16.
    pub gemm_tiles: String,
    /// Parameters, their Adam moments and one batch: what any trainer must hold.
    pub min_gpu_bytes: u64,
    #[serde(flatten)]
    pub adapter: AdapterRecord,
    pub timing_method: &'static str,
}

/// Writes random shards of `rows` rows (≤ 65536 per file) in `dtype` under `dir`.
fn write_shards(
    dir: &Path,
    d_in: usize,
    rows: usize,
    dtype: ActDtype,
    seed: u64,
) -> anyhow::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut paths = Vec::new();
    let mut left = rows;
    while left > 0 {
        let n = left.min(65536);
        // A few strong directions on noise, so TopK sees realistic, untied values.
        let x: Vec<f32> = (0..n * d_in)
            .map(|i| rng.random_range(-1.0f32..1.0) + if i % 7 == 0 { 2.0 } else { 0.0 })
            .collect();
        let path = dir.join(format!("bench-{:03}.safetensors", paths.len()));
        let tensor = match dtype {
            ActDtype::F32 => TensorOut::f32("activations", &[n, d_in], &x),
            ActDtype::F16 => TensorOut::f16("activations", &[n, d_in], &x),
            ActDtype::Bf16 => TensorOut::bf16("activations", &[n, d_in], &x),
        };
        write_safetensors(&path, &[tensor], None)?;
        paths.push(path);
        left -= n;
    }
    Ok(paths)
}

/// Runs the benchmark with its shards in `scratch` (removed afterwards).
pub fn bench_train(
    gpu: &Gpu,
    bench: TrainBench,
    scratch: &Path,
) -> anyhow::Result<TrainBenchRecord> {
    let BenchShape { batch, d_in, .. } = bench.shape;
    let total_steps = bench.warmup + bench.steps + bench.timed_steps;
    let paths = write_shards(scratch, d_in, total_steps * batch, bench.dtype, 1)?;
    let result = run(gpu, bench, &paths);
    let _ = std::fs::remove_dir_all(scratch);
    result
}

fn run(
    gpu: &Gpu,
    bench: TrainBench,
    paths: &[std::path::PathBuf],
) -> anyhow::Result<TrainBenchRecord> {
    let BenchShape {
        batch,
        d_in,
        d_sae,
        k,
    } = bench.shape;
    let shards = Arc::new(open_shards(paths, "activations", Some(d_in))?);
    // The stream `sae train` uses: shuffle pool, 16-bit rows kept as stored.
    let stream = BatchStream::start(
        shards,
        StreamConfig {
            batch_rows: batch,
            shuffle_rows: 8192,
            shuffle_shards: true,
            seed: 0,
            epochs: None,
            max_rows: None,
            drop_last: true,
            skip_nonfinite: false,
            queue_depth: 4,
            skip_batches: 0,
            range: crate::data::RowRange::All,
            keep_16bit: true,
        },
    )?;
    let architecture = bench.architecture;
    let spec = architecture.spec();
    // `sae train`'s defaults, with λ at its full value from the first step.
    let mut settings = ArchSettings::defaults(1);
    settings.relu.l1_warmup_steps = 1;
    settings.jumprelu.l0_warmup_steps = 1;
    let model = ModelConfig {
        architecture,
        settings,
        k,
        d_sae,
        transcoder: false,
        skip: false,
    };
    let params = spec.init(d_in, &model, 0);
    let options = TrainerOptions {
        batch_rows: batch,
        adam: AdamConfig::default(),
        dead_tokens: 10_000_000,
        auxk: AuxKConfig {
            alpha: 1.0 / 32.0,
            k_aux: (d_in / 2).clamp(1, 512),
        },
        matmul: bench.matmul,
    };
    gpu.allocations.reset_peak();
    let mut trainer = build_trainer(gpu, &params, &model, &options, None)?;
    // The tile shape `sae train` would use: the cached choice for this adapter, if any.
    let gemm = EncoderShape {
        rows: batch,
        d_in,
        d_sae: trainer.sae.blocks[0].range.len,
    };
    trainer.sae.gemm_tiles = tiles_for(gpu, gemm, false, || {})?;
    let log_every = bench.log_every.max(1);
    let mut feed = Feed::new(gpu, batch, d_in)?;
    let args = |step: u64| MemberStep {
        scale: 1.0,
        target_scale: 1.0,
        lr: 1e-4,
        step,
        with_metrics: step.is_multiple_of(log_every as u64),
        penalty: spec.penalty_at(&model.settings, step),
    };
    let mut stream = stream.peekable();
    let mut step = 0u64;
    let mut next = |data_wait: &mut Duration| -> anyhow::Result<crate::data::Batch> {
        let start = Instant::now();
        let batch = stream
            .next()
            .ok_or_else(|| anyhow::anyhow!("the benchmark shards ran out"))??;
        *data_wait += start.elapsed();
        Ok(batch)
    };
    let mut ignored = Duration::ZERO;
    for _ in 0..bench.warmup {
        let b = next(&mut ignored)?;
        step += 1;
        feed.step(&b, [(&mut trainer, args(step))])?;
        trainer.ready_metrics(false)?;
    }
    trainer.ready_metrics(true)?;

    let before = gpu.allocations.counts();
    let (waited_before, submit_before) = (feed.waited, feed.submitting);
    let mut data_wait = Duration::ZERO;
    let mut host = Duration::ZERO;
    let started = Instant::now();
    for _ in 0..bench.steps {
        let b = next(&mut data_wait)?;
        step += 1;
        let t = Instant::now();
        feed.step(&b, [(&mut trainer, args(step))])?;
        trainer.ready_metrics(false)?;
        host += t.elapsed();
    }
    trainer.ready_metrics(true)?;
    let wall = started.elapsed();
    let after = gpu.allocations.counts();
    let waited = feed.waited - waited_before;
    let submitting = feed.submitting - submit_before;
    let host = host.saturating_sub(waited + submitting);

    let mut stage_ms: BTreeMap<String, f64> = BTreeMap::new();
    let mut kernel_ms: BTreeMap<String, f64> = BTreeMap::new();
    for _ in 0..bench.timed_steps {
        let b = next(&mut ignored)?;
        step += 1;
        for (stage, label, ms) in feed.step_timed(&b, &mut trainer, args(step))? {
            let share = ms / bench.timed_steps as f64;
            *stage_ms.entry(stage.to_string()).or_default() += share;
            let kernel = label.rsplit("::").next().unwrap_or(&label);
            *kernel_ms.entry(format!("{stage}/{kernel}")).or_default() += share;
        }
    }
    let steps = bench.steps.max(1) as f64;
    let ms_per_step = wall.as_secs_f64() * 1e3 / steps;
    let gpu_ms: f64 = stage_ms.values().sum();
    let params_bytes = 4 * (2 * d_in * d_sae + d_sae + d_in) as u64;
    let record = TrainBenchRecord {
        bench: "train",
        architecture: architecture.name(),
        matmul: bench.matmul.name(),
        shape: bench.shape.label(),
        dtype: format!("{:?}", bench.dtype).to_lowercase(),
        steps: bench.steps,
        tokens_per_s: (bench.steps * batch) as f64 / wall.as_secs_f64().max(1e-12),
        ms_per_step,
        host_ms_per_step: host.as_secs_f64() * 1e3 / steps,
        host_fraction: host.as_secs_f64() * 1e3 / steps / ms_per_step,
        submit_ms_per_step: submitting.as_secs_f64() * 1e3 / steps,
        data_wait_ms_per_step: data_wait.as_secs_f64() * 1e3 / steps,
        gpu_ms_per_step: gpu_ms,
        stage_ms,
        kernel_ms,
        gpu_busy_fraction: if gpu.has_timestamps() {
            gpu_ms / ms_per_step
        } else {
            f64::NAN
        },
        buffers_created_in_steady_state: after.buffers - before.buffers,
        bind_groups_created_in_steady_state: after.bind_groups - before.bind_groups,
        peak_gpu_bytes: gpu.allocations.counts().peak_bytes,
        gemm_tiles: match trainer.sae.matmul() {
            Matmul::F32 => trainer.sae.gemm_tiles.label(),
            Matmul::F16(tile) => tile.label(),
        },
        min_gpu_bytes: 3 * params_bytes + 4 * (batch * d_in) as u64,
        adapter: AdapterRecord::of(gpu),
        timing_method: if gpu.has_timestamps() {
            "gpu_timestamps"
        } else {
            "none (no TIMESTAMP_QUERY)"
        },
    };
    Ok(record)
}
