//! The `sae train` job: streams shards through the GPU trainer, logs metrics, checkpoints
//! atomically, evaluates on held-out data and exports sparsify and SAELens checkpoints.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::analysis::eval::{EvalAccumulator, EvalSummary, Evaluator};
use crate::data::{
    expand_inputs, open_shards, BatchStream, RowRange, Shard, ShardInfo, StreamConfig,
};
use crate::gpu::kernels::encoder::EncoderShape;
use crate::gpu::kernels::optim::AdamConfig;
use crate::gpu::kernels::topk::MAX_K;
use crate::gpu::tune::tiles_for;
use crate::gpu::{Gpu, InjectedFault};
use crate::io::{write_json_atomic, write_safetensors, TensorOut};
use crate::sae::blocks::LatentBlocks;
use crate::sae::checkpoint::{self, Checkpoint};
use crate::sae::formats::{save_saelens, save_sparsify};
use crate::sae::init::{geometric_median, input_scale, mean_row};
use crate::sae::params::SaeParams;
use crate::sae::schedule::lr_at;
use crate::sae::trainer::{AuxKConfig, StepMetrics, Trainer};

/// Every hyperparameter of a run; saved in `config.json` and read back by `--resume`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    pub inputs: Vec<PathBuf>,
    pub tensor: String,
    pub eval_inputs: Vec<PathBuf>,
    /// Fraction of each training shard held out for evaluation (when no eval shards).
    pub eval_fraction: f64,
    pub eval_every: u64,
    pub k: usize,
    pub d_sae: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub lr_warmup_steps: u64,
    pub steps: u64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    pub seed: u64,
    pub shuffle_buffer: usize,
    pub b_dec_init: BDecInit,
    pub normalize_activations: bool,
    pub auxk_alpha: f32,
    pub auxk_k: usize,
    pub dead_tokens: u64,
    pub checkpoint_every: u64,
    pub log_every: u64,
    pub skip_nonfinite: bool,
    pub format: ExportFormat,
    /// Rows used to estimate b_dec's geometric median and the input scale.
    pub init_sample_rows: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum BDecInit {
    /// Weiszfeld geometric median of a sample (openai/sparse_autoencoder).
    GeometricMedian,
    /// Mean of the first batch (sparsify).
    Mean,
    Zeros,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    Sparsify,
    Saelens,
    Both,
}

/// What a finished run reports.
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    pub steps: u64,
    pub tokens: u64,
    pub seconds: f64,
    pub tokens_per_s: f64,
    pub heldout: Option<EvalSummary>,
    pub run_dir: PathBuf,
    /// The most bytes of GPU buffers alive at once (what this process allocated; 0 when the
    /// run stopped early).
    pub peak_gpu_bytes: u64,
}

/// How the user asked to run.
pub struct RunOptions {
    pub run_dir: PathBuf,
    pub resume: bool,
    pub overwrite: bool,
    pub quiet: bool,
    /// Write a checkpoint and stop after this many steps, as an interrupted run would
    /// (for testing resume; the run's exports are not written).
    pub stop_after: Option<u64>,
    /// Time the encoder GEMM's tile shapes for this adapter and shape when none are cached
    /// (gpu::tune); otherwise the cached choice or the default. Never changes results.
    pub tune: bool,
}

/// Everything a run writes into its directory (removed by --overwrite).
const RUN_FILES: [&str; 9] = [
    "config.json",
    "metrics.jsonl",
    "summary.json",
    "sparsity.safetensors",
    "checkpoints",
    "sparsify",
    "saelens",
    "loss.png",
    "density.png",
];

/// Refuses a directory that already holds a run unless the user resumes or overwrites it.
pub fn refuse_existing_run(dir: &Path, resume: bool, overwrite: bool) -> anyhow::Result<()> {
    if dir.join("config.json").exists() && !resume && !overwrite {
        bail!(
            "{}: already holds a run; pass --resume {} to continue it or --overwrite to replace it",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

fn prepare_run_dir(options: &RunOptions) -> anyhow::Result<()> {
    let dir = &options.run_dir;
    refuse_existing_run(dir, options.resume, options.overwrite)?;
    let holds_run = dir.join("config.json").exists();
    if options.overwrite && holds_run {
        for name in RUN_FILES {
            let path = dir.join(name);
            if path.is_dir() {
                std::fs::remove_dir_all(&path)
                    .with_context(|| format!("{}: cannot remove", path.display()))?;
            } else if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("{}: cannot remove", path.display()))?;
            }
        }
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create the run directory", dir.display()))?;
    // Fail now, not after hours of training, if the directory is not writable.
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok")
        .with_context(|| format!("{}: run directory is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// `config.json` records paths as text (so `--resume` can find the data again): a path that
/// is not valid UTF-8 is refused up front.
fn check_utf8_paths<'a>(paths: impl IntoIterator<Item = &'a Path>) -> anyhow::Result<()> {
    for path in paths {
        if path.to_str().is_none() {
            bail!(
                "{}: path is not valid UTF-8; config.json records paths as text, so rename it",
                path.display()
            );
        }
    }
    Ok(())
}

/// Validates hyperparameters against the data and the GPU before anything runs.
pub fn validate(config: &TrainConfig, d_in: usize) -> anyhow::Result<()> {
    if config.k == 0 {
        bail!("--k must be at least 1");
    }
    if config.k > config.d_sae {
        bail!(
            "--k {} exceeds the dictionary size d_sae = {}",
            config.k,
            config.d_sae
        );
    }
    if config.k > MAX_K {
        bail!("--k {} exceeds the largest supported k ({MAX_K})", config.k);
    }
    if config.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if d_in == 0 || config.d_sae == 0 {
        bail!("empty dictionary (d_in {d_in}, d_sae {})", config.d_sae);
    }
    if !(0.0..1.0).contains(&config.eval_fraction) {
        bail!(
            "--eval-fraction must be in [0, 1), got {}",
            config.eval_fraction
        );
    }
    if !(config.lr.is_finite() && config.lr >= 0.0) {
        bail!("--lr must be a finite non-negative number");
    }
    Ok(())
}

/// Bytes of GPU memory the trainer allocates, for a clear message before allocation fails.
pub fn gpu_bytes_needed(d_in: usize, d_sae: usize, k: usize, batch: usize, k_aux: usize) -> u64 {
    let params = (2 * d_in * d_sae + d_sae + d_in) as u64;
    let per_param = 4 * params; // weights, gradients, two moments
    let activations = (batch * (2 * d_in + d_sae + 2 * k)) as u64 + (batch * d_in) as u64;
    let aux = if k_aux > 0 {
        (batch * (4 * d_in + 3 * k_aux)) as u64
    } else {
        0
    };
    let index = (d_sae * batch.div_ceil(32) + 3 * d_sae + 2 * batch * k) as u64;
    4 * (per_param + activations + aux + index + (batch * d_sae) as u64)
}

struct Data {
    train: Arc<Vec<Shard>>,
    eval: Arc<Vec<Shard>>,
    train_range: RowRange,
    eval_range: RowRange,
    d_in: usize,
}

fn open_data(config: &TrainConfig) -> anyhow::Result<Data> {
    let train_paths = expand_inputs(&config.inputs)?;
    let train = open_shards(&train_paths, &config.tensor, None)?;
    let d_in = train[0].d_in;
    let (eval, train_range, eval_range) = if !config.eval_inputs.is_empty() {
        let paths = expand_inputs(&config.eval_inputs)?;
        (
            open_shards(&paths, &config.tensor, Some(d_in))?,
            RowRange::All,
            RowRange::All,
        )
    } else if config.eval_fraction > 0.0 {
        let again = open_shards(&train_paths, &config.tensor, Some(d_in))?;
        (
            again,
            RowRange::Head(config.eval_fraction),
            RowRange::Tail(config.eval_fraction),
        )
    } else {
        (Vec::new(), RowRange::All, RowRange::All)
    };
    Ok(Data {
        train: Arc::new(train),
        eval: Arc::new(eval),
        train_range,
        eval_range,
        d_in,
    })
}

fn stream_config(
    config: &TrainConfig,
    range: RowRange,
    max_rows: u64,
    skip_batches: u64,
) -> StreamConfig {
    StreamConfig {
        batch_rows: config.batch_size,
        shuffle_rows: config.shuffle_buffer,
        shuffle_shards: true,
        seed: config.seed,
        epochs: None,
        max_rows: Some(max_rows),
        drop_last: true,
        skip_nonfinite: config.skip_nonfinite,
        queue_depth: 4,
        skip_batches,
        range,
        // 16-bit shards go to the GPU as stored and are widened there.
        keep_16bit: true,
    }
}

/// The first `rows` training rows, in training order.
fn init_sample(data: &Data, config: &TrainConfig, rows: usize) -> anyhow::Result<Vec<f32>> {
    let mut stream_cfg = stream_config(config, data.train_range, rows as u64, 0);
    stream_cfg.batch_rows = rows.clamp(1, 8192);
    stream_cfg.drop_last = false;
    let mut sample = Vec::with_capacity(rows * data.d_in);
    for batch in BatchStream::start(data.train.clone(), stream_cfg)? {
        sample.extend_from_slice(&batch?.x);
        if sample.len() >= rows * data.d_in {
            break;
        }
    }
    sample.truncate(rows * data.d_in);
    Ok(sample)
}

fn evaluate(
    gpu: &Gpu,
    trainer: &Trainer<'_>,
    data: &Data,
    config: &TrainConfig,
    scale: f32,
) -> anyhow::Result<Option<EvalSummary>> {
    if data.eval.is_empty() {
        return Ok(None);
    }
    let mut stream_cfg = StreamConfig::sequential(config.batch_size);
    stream_cfg.range = data.eval_range;
    stream_cfg.skip_nonfinite = config.skip_nonfinite;
    let evaluator = Evaluator::new(gpu, &trainer.sae, config.batch_size)?;
    let acc: EvalAccumulator = evaluator.run(
        BatchStream::start(data.eval.clone(), stream_cfg)?,
        scale,
        |_| {},
    )?;
    Ok(Some(acc.summary()))
}

fn progress_bar(steps: u64, start: u64, quiet: bool) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(start);
    bar
}

/// Resuming replays the data stream, so the files must be the ones the run started on.
fn check_same_data(recorded: &serde_json::Value, now: &[ShardInfo]) -> anyhow::Result<()> {
    let recorded = recorded.as_array().map(Vec::as_slice).unwrap_or_default();
    if recorded.len() != now.len() {
        bail!(
            "the run was trained on {} shards, but its inputs now give {}; resuming needs the same data",
            recorded.len(),
            now.len()
        );
    }
    for (then, shard) in recorded.iter().zip(now) {
        let rows = then.get("rows").and_then(serde_json::Value::as_u64);
        let bytes = then.get("bytes").and_then(serde_json::Value::as_u64);
        if rows != Some(shard.rows as u64) || bytes != Some(shard.bytes) {
            bail!(
                "{}: changed since the run started ({} rows, {} bytes then; {} rows, {} bytes now); resuming needs the same data",
                shard.path,
                rows.map_or("?".to_string(), |r| r.to_string()),
                bytes.map_or("?".to_string(), |b| b.to_string()),
                shard.rows,
                shard.bytes
            );
        }
    }
    Ok(())
}

/// A GPU failure mid-run (device lost, out of memory): say where, and what to resume from.
fn interrupted(error: anyhow::Error, step: u64, last_checkpoint: Option<&Path>) -> anyhow::Error {
    match last_checkpoint {
        Some(path) => error.context(format!(
            "training stopped at step {step}; the last checkpoint is {} (continue with --resume)",
            path.display()
        )),
        None => error.context(format!(
            "training stopped at step {step}, before the first checkpoint"
        )),
    }
}

/// `SAE_INJECT_FAULT=device-lost@STEP` or `out-of-memory@STEP`: make the device fail before
/// that step, so tests can check what a run does when a real GPU faults.
fn injected_fault() -> anyhow::Result<Option<(InjectedFault, u64)>> {
    match std::env::var("SAE_INJECT_FAULT") {
        Ok(text) => InjectedFault::parse(&text).map(Some).ok_or_else(|| {
            anyhow!("SAE_INJECT_FAULT={text}: expected device-lost@STEP or out-of-memory@STEP")
        }),
        Err(_) => Ok(None),
    }
}

/// Keeps the metrics lines of steps up to `step` (used when resuming).
fn truncate_metrics(path: &Path, step: u64) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    crate::io::write_atomic(path, kept.as_bytes())
}

fn shard_infos(shards: &[Shard]) -> Vec<ShardInfo> {
    shards.iter().map(Shard::info).collect()
}

/// What the host knows of a logged step when it submits it; the GPU's figures join it later.
struct LogContext {
    step: u64,
    tokens: u64,
    lr: f64,
    tokens_per_s: f64,
    skipped_nonfinite: u64,
}

/// `metrics.jsonl` and the logged steps whose figures have not come back yet.
struct MetricsLog {
    file: std::fs::File,
    path: PathBuf,
    pending: VecDeque<LogContext>,
    auxk_alpha: f32,
    d_sae: usize,
}

impl MetricsLog {
    /// Writes a line per step whose figures came back; a non-finite loss ends the run.
    fn write(
        &mut self,
        ready: Vec<(u64, StepMetrics)>,
        bar: &ProgressBar,
        last_checkpoint: Option<&Path>,
    ) -> anyhow::Result<()> {
        for (step, m) in ready {
            let Some(at) = self.pending.iter().position(|c| c.step == step) else {
                continue;
            };
            let Some(context) = self.pending.remove(at) else {
                continue;
            };
            let loss = m.fvu + f64::from(self.auxk_alpha) * m.auxk_loss;
            if !loss.is_finite() {
                bail!(
                    "training diverged: the loss is {loss} at step {step}; last good checkpoint: {}",
                    last_checkpoint.map_or("none".to_string(), |p| p.display().to_string())
                );
            }
            let dead_frac = f64::from(m.dead) / self.d_sae as f64;
            let line = json!({
                "step": step, "tokens": context.tokens, "loss": loss, "fvu": m.fvu, "l0": m.l0,
                "dead_frac": dead_frac, "auxk_loss": m.auxk_loss, "lr": context.lr,
                "tokens_per_s": context.tokens_per_s,
                "skipped_nonfinite": context.skipped_nonfinite,
            });
            writeln!(self.file, "{line}")
                .with_context(|| format!("{}: cannot write", self.path.display()))?;
            bar.set_message(format!(
                "FVU {:.4}  L0 {:.1}  dead {:.1}%  {:.0} tok/s",
                m.fvu,
                m.l0,
                100.0 * dead_frac,
                context.tokens_per_s
            ));
        }
        Ok(())
    }
}

/// Runs (or resumes) training. `config` is ignored on resume: the run's own `config.json` wins.
pub fn train(
    gpu: &Gpu,
    config: Option<TrainConfig>,
    options: &RunOptions,
) -> anyhow::Result<TrainReport> {
    let given = config
        .iter()
        .flat_map(|c| c.inputs.iter().chain(&c.eval_inputs));
    check_utf8_paths(
        given
            .map(PathBuf::as_path)
            .chain([options.run_dir.as_path()]),
    )?;
    prepare_run_dir(options)?;
    let run_dir = &options.run_dir;
    let config_path = run_dir.join("config.json");
    let checkpoints_dir = run_dir.join("checkpoints");
    let resumed = if options.resume {
        match checkpoint::latest(&checkpoints_dir)? {
            Some(found) => Some(found),
            None if config_path.exists() => {
                tracing::warn!(
                    "no usable checkpoint in {}; starting the run over",
                    checkpoints_dir.display()
                );
                None
            }
            None => bail!("{}: nothing to resume (no config.json)", run_dir.display()),
        }
    } else {
        None
    };
    let (config, recorded_data): (TrainConfig, Option<serde_json::Value>) = if options.resume {
        let text = std::fs::read_to_string(&config_path)
            .with_context(|| format!("{}: cannot read", config_path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not valid JSON", config_path.display()))?;
        let config = serde_json::from_value(value["config"].clone())
            .with_context(|| format!("{}: bad \"config\"", config_path.display()))?;
        (config, value.get("data").cloned())
    } else {
        (
            config.ok_or_else(|| anyhow!("no training configuration given"))?,
            None,
        )
    };

    let data = open_data(&config)?;
    if let Some(recorded) = recorded_data {
        check_same_data(&recorded, &shard_infos(&data.train))?;
    }
    validate(&config, data.d_in)?;
    let d_in = data.d_in;
    let k_aux = if config.auxk_alpha > 0.0 {
        config.auxk_k
    } else {
        0
    };
    let needed = gpu_bytes_needed(d_in, config.d_sae, config.k, config.batch_size, k_aux);
    tracing::info!("training needs about {} MiB of GPU memory", needed >> 20);
    // Per-latent tensors larger than one storage binding are split into blocks of latents;
    // this fails only when a single latent's column cannot be bound, before anything is
    // allocated.
    gpu.check_memory("the run", needed)?;
    let suggestion = "use a smaller dictionary or --batch-size";
    LatentBlocks::plan(d_in, config.d_sae, config.batch_size, gpu.binding_limit()).map_err(
        |e| {
            anyhow!(
                "{e}; the run needs about {} MiB of GPU memory in all; {suggestion}",
                needed >> 20
            )
        },
    )?;

    if !options.resume || !config_path.exists() {
        let config_value = serde_json::to_value(&config).context("recording the configuration")?;
        write_json_atomic(
            &config_path,
            &json!({
                "config": config_value,
                "d_in": d_in,
                "data": shard_infos(&data.train),
                "eval_data": shard_infos(&data.eval),
                "adapter": gpu.summary,
                "sae_wgpu_version": env!("CARGO_PKG_VERSION"),
                "estimated_gpu_bytes": needed,
            }),
        )?;
    }

    let (mut params, scale, start_step, mut tokens, mut fire_counts, moments) = match resumed {
        Some((path, ckpt)) => {
            let Checkpoint {
                step,
                tokens,
                input_scale,
                snapshot,
                fire_counts,
            } = ckpt;
            if !options.quiet {
                eprintln!(
                    "resuming from {} (step {step} of {})",
                    path.display(),
                    config.steps
                );
            }
            (
                snapshot.params,
                input_scale,
                step,
                tokens,
                fire_counts,
                Some((snapshot.moments, snapshot.since_fired)),
            )
        }
        None => {
            let mut params = SaeParams::init_topk(d_in, config.d_sae, config.k, config.seed);
            let sample_rows = match config.b_dec_init {
                BDecInit::Mean => config.batch_size,
                _ => config.init_sample_rows,
            };
            let mut sample = init_sample(&data, &config, sample_rows.max(1))?;
            let scale = if config.normalize_activations {
                input_scale(&sample, d_in)
            } else {
                1.0
            };
            if scale != 1.0 {
                sample.iter_mut().for_each(|v| *v /= scale);
            }
            params.b_dec = match config.b_dec_init {
                BDecInit::GeometricMedian => geometric_median(&sample, d_in, 100, 1e-5),
                BDecInit::Mean => mean_row(&sample, d_in),
                BDecInit::Zeros => vec![0.0; d_in],
            };
            (params, scale, 0, 0, vec![0u64; config.d_sae], None)
        }
    };

    let adam = AdamConfig {
        beta1: config.adam_beta1,
        beta2: config.adam_beta2,
        eps: config.adam_eps,
    };
    let auxk = (config.auxk_alpha > 0.0).then_some(AuxKConfig {
        alpha: config.auxk_alpha,
        k_aux: config.auxk_k,
    });
    let mut trainer = Trainer::new(
        gpu,
        &params,
        config.batch_size,
        adam,
        config.dead_tokens,
        auxk,
    )
    .map_err(|e| {
        anyhow!(
            "{e} (the run needs about {} MiB of GPU memory)",
            needed >> 20
        )
    })?;
    if let Some((moments, since_fired)) = &moments {
        trainer.restore(moments, since_fired)?;
    }
    let gemm = EncoderShape {
        rows: config.batch_size,
        d_in,
        d_sae: trainer.sae.blocks[0].range.len,
    };
    trainer.sae.gemm_tiles = tiles_for(gpu, gemm, options.tune, || {
        if !options.quiet {
            eprintln!(
                "timing the encoder GEMM's tile shapes on this adapter (once per adapter and shape; --no-tune skips)"
            );
        }
    })?;

    let metrics_path = run_dir.join("metrics.jsonl");
    if options.resume {
        truncate_metrics(&metrics_path, start_step)?;
    } else {
        let _ = std::fs::remove_file(&metrics_path);
    }
    let metrics_file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("{}: cannot open", metrics_path.display()))?;

    let max_rows = config.steps * config.batch_size as u64;
    let stream = BatchStream::start(
        data.train.clone(),
        stream_config(&config, data.train_range, max_rows, start_step),
    )?;
    let bar = progress_bar(config.steps, start_step, options.quiet);
    let started = Instant::now();
    let (mut window_start, mut window_tokens) = (Instant::now(), 0u64);
    let mut last_checkpoint: Option<PathBuf> = None;
    let mut step = start_step;
    let save_checkpoint = |trainer: &Trainer<'_>,
                           step: u64,
                           tokens: u64,
                           fire_counts: &mut Vec<u64>|
     -> anyhow::Result<PathBuf> {
        for (total, c) in fire_counts.iter_mut().zip(trainer.take_fire_counts()?) {
            *total += u64::from(c);
        }
        checkpoint::save(
            &checkpoints_dir,
            &Checkpoint {
                step,
                tokens,
                input_scale: scale,
                snapshot: trainer.snapshot()?,
                fire_counts: fire_counts.clone(),
            },
        )
    };

    let fault = injected_fault()?;
    let mut log = MetricsLog {
        file: metrics_file,
        path: metrics_path.clone(),
        pending: VecDeque::new(),
        auxk_alpha: config.auxk_alpha,
        d_sae: config.d_sae,
    };
    for batch in stream {
        if step >= config.steps {
            break;
        }
        if let Some((fault, at)) = fault {
            if at == step + 1 {
                gpu.inject_fault(fault);
            }
        }
        let batch = batch?;
        let lr = lr_at(config.lr, step, config.lr_warmup_steps, config.steps);
        let logged = (step + 1) % config.log_every.max(1) == 0 || step + 1 == config.steps;
        trainer
            .step_batch(&batch, scale, lr, step + 1, logged)
            .map_err(|e| interrupted(e.into(), step + 1, last_checkpoint.as_deref()))?;
        step += 1;
        tokens += batch.rows as u64;
        window_tokens += batch.rows as u64;
        if logged {
            let elapsed = window_start.elapsed().as_secs_f64().max(1e-9);
            log.pending.push_back(LogContext {
                step,
                tokens,
                lr,
                tokens_per_s: window_tokens as f64 / elapsed,
                skipped_nonfinite: batch.skipped_nonfinite,
            });
            (window_start, window_tokens) = (Instant::now(), 0);
        }
        // Figures of earlier steps, as the GPU finishes them; never waits.
        let ready = trainer
            .ready_metrics(false)
            .map_err(|e| interrupted(e.into(), step, last_checkpoint.as_deref()))?;
        log.write(ready, &bar, last_checkpoint.as_deref())?;
        bar.set_position(step);
        // Checkpoints and held-out evaluation are the synchronisation points.
        let sync = |trainer: &mut Trainer<'_>,
                    log: &mut MetricsLog,
                    last: Option<&Path>|
         -> anyhow::Result<()> {
            let ready = trainer
                .ready_metrics(true)
                .map_err(|e| interrupted(e.into(), step, last))?;
            log.write(ready, &bar, last)
        };
        if options.stop_after == Some(step) && step < config.steps {
            sync(&mut trainer, &mut log, last_checkpoint.as_deref())?;
            bar.finish_and_clear();
            save_checkpoint(&trainer, step, tokens, &mut fire_counts)?;
            return Ok(TrainReport {
                steps: step,
                tokens,
                seconds: started.elapsed().as_secs_f64(),
                tokens_per_s: 0.0,
                heldout: None,
                run_dir: run_dir.clone(),
                peak_gpu_bytes: 0,
            });
        }
        if config.checkpoint_every > 0 && step % config.checkpoint_every == 0 && step < config.steps
        {
            sync(&mut trainer, &mut log, last_checkpoint.as_deref())?;
            let saved = save_checkpoint(&trainer, step, tokens, &mut fire_counts)
                .map_err(|e| interrupted(e, step, last_checkpoint.as_deref()))?;
            last_checkpoint = Some(saved);
        }
        if config.eval_every > 0 && step % config.eval_every == 0 && step < config.steps {
            sync(&mut trainer, &mut log, last_checkpoint.as_deref())?;
            if let Some(summary) = evaluate(gpu, &trainer, &data, &config, scale)? {
                let line = json!({"step": step, "tokens": tokens, "eval": summary});
                writeln!(log.file, "{line}")?;
            }
        }
    }
    let ready = trainer
        .ready_metrics(true)
        .map_err(|e| interrupted(e.into(), step, last_checkpoint.as_deref()))?;
    log.write(ready, &bar, last_checkpoint.as_deref())?;
    bar.finish_and_clear();
    if step < config.steps {
        tracing::warn!("the data ran out after {step} of {} steps", config.steps);
    }
    let final_checkpoint = save_checkpoint(&trainer, step, tokens, &mut fire_counts)?;
    tracing::info!("final checkpoint {}", final_checkpoint.display());
    let seconds = started.elapsed().as_secs_f64();

    let heldout = evaluate(gpu, &trainer, &data, &config, scale)?;
    params = trainer.snapshot()?.params;
    params.fold_input_scale(scale);

    // Feature density over the training tokens.
    let log10_density = crate::analysis::hist::log10_density(&fire_counts, tokens);
    write_safetensors(
        &run_dir.join("sparsity.safetensors"),
        &[TensorOut::f32("sparsity", &[config.d_sae], &log10_density)],
        None,
    )?;
    if matches!(config.format, ExportFormat::Sparsify | ExportFormat::Both) {
        save_sparsify(&run_dir.join("sparsify"), &params)?;
    }
    if matches!(config.format, ExportFormat::Saelens | ExportFormat::Both) {
        let metadata = json!({
            "sae_lens_version": "6.0.0",
            "sae_wgpu_version": env!("CARGO_PKG_VERSION"),
            "model_name": "unknown",
            "hook_name": "unknown",
            "context_size": 0,
            "training_tokens": tokens,
        });
        save_saelens(
            &run_dir.join("saelens"),
            &params,
            Some(&log10_density),
            metadata,
        )?;
    }
    let report = TrainReport {
        steps: step,
        tokens,
        seconds,
        tokens_per_s: (tokens - start_step * config.batch_size as u64) as f64 / seconds.max(1e-9),
        heldout,
        run_dir: run_dir.clone(),
        peak_gpu_bytes: gpu.allocations.counts().peak_bytes,
    };
    write_json_atomic(&run_dir.join("summary.json"), &report)?;
    if let Err(error) =
        crate::analysis::plots::training_plots(run_dir, &metrics_path, &log10_density)
    {
        tracing::warn!("could not draw the plots: {error:#}");
    }
    Ok(report)
}
