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
use crate::gpu::{Gpu, GpuError, InjectedFault};
use crate::io::{write_json_atomic, write_safetensors, TensorOut};
use crate::sae::architecture::{matryoshka_widths, Architecture, L0Penalty, ThresholdParam};
use crate::sae::blocks::LatentBlocks;
use crate::sae::checkpoint::{self, Checkpoint};
use crate::sae::feed::{Feed, MemberStep};
use crate::sae::formats::{save_saelens, save_sparsify};
use crate::sae::init::{geometric_median, input_scale, mean_row};
use crate::sae::params::{Activation, SaeParams};
use crate::sae::schedule::lr_at;
use crate::sae::trainer::{ArchitectureSetup, AuxKConfig, JumpReluConfig, StepMetrics, Trainer};
use crate::sae::GpuSae;

/// Every hyperparameter of a run; saved in `config.json` and read back by `--resume`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainConfig {
    pub inputs: Vec<PathBuf>,
    pub tensor: String,
    pub eval_inputs: Vec<PathBuf>,
    /// Fraction of each training shard held out for evaluation (when no eval shards).
    pub eval_fraction: f64,
    pub eval_every: u64,
    /// `topk` for runs written before architectures were recorded.
    #[serde(default)]
    pub architecture: Architecture,
    /// Matryoshka's prefix widths as given (empty: the default groups); see
    /// [`matryoshka_widths`].
    #[serde(default)]
    pub matryoshka_widths: Vec<usize>,
    /// ReLU + L1: the penalty's coefficient λ, reached linearly over `l1_warmup_steps`.
    #[serde(default)]
    pub l1_coefficient: f64,
    #[serde(default)]
    pub l1_warmup_steps: u64,
    /// The ReLU family: the largest global gradient norm (`None`: no clipping).
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// JumpReLU: the L0 penalty's coefficient λ, reached linearly over `l0_warmup_steps`.
    #[serde(default)]
    pub l0_coefficient: f64,
    #[serde(default)]
    pub l0_warmup_steps: u64,
    #[serde(default)]
    pub l0_penalty: L0Penalty,
    /// JumpReLU: ε of the straight-through estimators' rectangle kernel.
    #[serde(default)]
    pub jumprelu_bandwidth: f64,
    /// JumpReLU: every latent's θ at the start.
    #[serde(default)]
    pub jumprelu_init_threshold: f64,
    #[serde(default)]
    pub jumprelu_threshold_param: ThresholdParam,
    /// Latents kept per row; for the ReLU family, the cap on the codes kept per row.
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
    /// Seed of the data order (shard order and shuffle); `None`: `seed`. A sweep gives every
    /// member the same one, so its members see the same batches.
    #[serde(default)]
    pub data_seed: Option<u64>,
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

impl TrainConfig {
    /// The seed of the data order.
    pub fn data_seed(&self) -> u64 {
        self.data_seed.unwrap_or(self.seed)
    }

    /// Names the first setting that must be shared by runs trained on the same batches and
    /// differs between `self` and `other`.
    pub fn data_mismatch(&self, other: &TrainConfig) -> Option<&'static str> {
        let same = [
            ("inputs", self.inputs == other.inputs),
            ("tensor", self.tensor == other.tensor),
            ("eval inputs", self.eval_inputs == other.eval_inputs),
            ("eval fraction", self.eval_fraction == other.eval_fraction),
            ("batch size", self.batch_size == other.batch_size),
            ("steps", self.steps == other.steps),
            (
                "shuffle buffer",
                self.shuffle_buffer == other.shuffle_buffer,
            ),
            ("data seed", self.data_seed() == other.data_seed()),
            (
                "skip_nonfinite",
                self.skip_nonfinite == other.skip_nonfinite,
            ),
        ];
        same.into_iter().find(|(_, s)| !s).map(|(name, _)| name)
    }
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

/// The layouts a run exports unless told otherwise: both for TopK; SAELens alone for the
/// other architectures, which sparsify cannot run.
pub fn default_format(architecture: Architecture) -> ExportFormat {
    match architecture {
        Architecture::TopK => ExportFormat::Both,
        _ => ExportFormat::Saelens,
    }
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
    let non_negative = |flag: &str, value: f64| -> anyhow::Result<()> {
        if !(value.is_finite() && value >= 0.0) {
            bail!("{flag} must be a finite non-negative number, got {value}");
        }
        Ok(())
    };
    if config.architecture == Architecture::Relu {
        non_negative("--l1-coefficient", config.l1_coefficient)?;
    }
    if config.architecture == Architecture::JumpRelu {
        non_negative("--l0-coefficient", config.l0_coefficient)?;
        let bandwidth = config.jumprelu_bandwidth;
        if !(bandwidth.is_finite() && bandwidth > 0.0) {
            bail!("--jumprelu-bandwidth must be a finite positive number, got {bandwidth}");
        }
        let theta = config.jumprelu_init_threshold;
        non_negative("--jumprelu-init-threshold", theta)?;
        if theta == 0.0 && config.jumprelu_threshold_param == ThresholdParam::Log {
            bail!("--jumprelu-init-threshold 0 has no logarithm (--jumprelu-threshold-param log)");
        }
    }
    if config.architecture.penalized() {
        if let Some(clip) = config.clip_grad_norm {
            if !(clip.is_finite() && clip > 0.0) {
                bail!("--clip-grad-norm must be positive, got {clip}");
            }
        }
    }
    if config.architecture == Architecture::Matryoshka {
        matryoshka_widths(&config.matryoshka_widths, config.d_sae).map_err(|e| anyhow!(e))?;
    } else if !config.matryoshka_widths.is_empty() {
        bail!(
            "--matryoshka-widths applies to --architecture matryoshka, not {}",
            config.architecture.name()
        );
    }
    if config.architecture != Architecture::TopK
        && matches!(config.format, ExportFormat::Sparsify | ExportFormat::Both)
    {
        bail!(
            "--format {}: sparsify has no inference path for --architecture {}; use --format saelens (its default)",
            match config.format {
                ExportFormat::Both => "both",
                _ => "sparsify",
            },
            config.architecture.name()
        );
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
        seed: config.data_seed(),
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
    // The sample is read on the host: 16-bit shards widened here, not left as stored.
    stream_cfg.keep_16bit = false;
    let mut sample = Vec::with_capacity(rows * data.d_in);
    for batch in BatchStream::start(data.train.clone(), stream_cfg)? {
        sample.extend_from_slice(&batch?.x);
        if sample.len() >= rows * data.d_in {
            break;
        }
    }
    sample.truncate(rows * data.d_in);
    if sample.is_empty() {
        bail!("no training rows to initialise b_dec and the input scale from");
    }
    Ok(sample)
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

/// One run of a group trained on the same batches (a sweep, or a single run as a group of
/// one): its directory, configuration and training state.
struct Member<'g> {
    run_dir: PathBuf,
    config: TrainConfig,
    trainer: Trainer<'g>,
    /// The factor inputs are divided by (1 when not scaling).
    scale: f32,
    tokens: u64,
    /// Fires per latent over all training tokens so far.
    fire_counts: Vec<u64>,
    log: MetricsLog,
    last_checkpoint: Option<PathBuf>,
}

/// A run directory with its configuration: the one given, or on resume the run's own.
pub struct MemberSpec {
    pub run_dir: PathBuf,
    /// `None` on resume: the run's `config.json` is read.
    pub config: Option<TrainConfig>,
}

/// Reads a run's `config.json`: its configuration and the shards it was trained on.
fn read_run_config(run_dir: &Path) -> anyhow::Result<(TrainConfig, Option<serde_json::Value>)> {
    let config_path = run_dir.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("{}: cannot read", config_path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", config_path.display()))?;
    let config = serde_json::from_value(value["config"].clone())
        .with_context(|| format!("{}: bad \"config\"", config_path.display()))?;
    Ok((config, value.get("data").cloned()))
}

/// The newest step at which every run of the group has a checkpoint that loads, and those
/// checkpoints. A group killed while writing one step's checkpoints resumes from the step
/// before, which every run still keeps.
fn common_checkpoint(run_dirs: &[PathBuf]) -> Option<Vec<(PathBuf, Checkpoint)>> {
    let first = run_dirs.first()?;
    let steps: Vec<u64> = checkpoint::steps_in(&first.join("checkpoints"))
        .into_iter()
        .map(|(step, _)| step)
        .collect();
    'steps: for &step in steps.iter().rev() {
        let mut found = Vec::with_capacity(run_dirs.len());
        for dir in run_dirs {
            let path = checkpoint::path_for(&dir.join("checkpoints"), step);
            if !path.exists() {
                continue 'steps;
            }
            match checkpoint::load(&path) {
                Ok(ckpt) => found.push((path, ckpt)),
                Err(error) => {
                    tracing::warn!("skipping unreadable checkpoint: {error:#}");
                    continue 'steps;
                }
            }
        }
        return Some(found);
    }
    None
}

/// GPU memory of the whole group, checked up front; the message names the first run that
/// does not fit beside the ones before it.
fn check_group_memory(gpu: &Gpu, members: &[(String, u64)], feed: u64) -> anyhow::Result<()> {
    let mut total = feed;
    for (name, needed) in members {
        total += needed;
        if members.len() > 1 {
            gpu.check_memory(
                &format!("sweep member {name} (with the members before it)"),
                total,
            )?;
        } else {
            gpu.check_memory("the run", total)?;
        }
    }
    Ok(())
}

/// Runs (or resumes) training. `config` is ignored on resume: the run's own `config.json` wins.
pub fn train(
    gpu: &Gpu,
    config: Option<TrainConfig>,
    options: &RunOptions,
) -> anyhow::Result<TrainReport> {
    let spec = MemberSpec {
        run_dir: options.run_dir.clone(),
        config,
    };
    let mut reports = train_group(gpu, vec![spec], options, &mut || Ok(()))?;
    reports
        .pop()
        .ok_or_else(|| anyhow!("training produced no report"))
}

/// Trains several runs on the same batches: every batch is read, shuffled and uploaded once
/// and each run steps on it, in one submission. Each run is an ordinary run directory; a
/// run ends bit-identical to the same configuration trained alone. `options.run_dir` is
/// ignored (each spec names its own); the other options apply to every run. `checked` runs
/// once every run is checked against the data and the GPU, before any run's files are written.
///
/// On resume a run without `config.json` (a sweep member killed before it was written) starts
/// from its given configuration, and so does the whole group: the group resumes from the
/// newest step at which every run has a checkpoint.
pub fn train_group(
    gpu: &Gpu,
    specs: Vec<MemberSpec>,
    options: &RunOptions,
    checked: &mut dyn FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<TrainReport>> {
    if specs.is_empty() {
        bail!("no runs to train");
    }
    let given = specs.iter().flat_map(|s| {
        s.config
            .iter()
            .flat_map(|c| c.inputs.iter().chain(&c.eval_inputs))
            .map(PathBuf::as_path)
            .chain([s.run_dir.as_path()])
    });
    check_utf8_paths(given)?;
    let mut configs = Vec::with_capacity(specs.len());
    let mut run_dirs = Vec::with_capacity(specs.len());
    for spec in specs {
        let member_options = RunOptions {
            run_dir: spec.run_dir.clone(),
            ..*options
        };
        prepare_run_dir(&member_options)?;
        let has_config = spec.run_dir.join("config.json").exists();
        let (config, recorded) = match spec.config {
            _ if options.resume && has_config => read_run_config(&spec.run_dir)?,
            Some(config) => (config, None),
            None if options.resume => bail!(
                "{}: nothing to resume (no config.json)",
                spec.run_dir.display()
            ),
            None => bail!("no training configuration given"),
        };
        configs.push((config, recorded));
        run_dirs.push(spec.run_dir);
    }
    let first = configs[0].0.clone();
    for ((config, _), dir) in configs.iter().zip(&run_dirs).skip(1) {
        if let Some(setting) = first.data_mismatch(config) {
            bail!(
                "{}: its {setting} differs from {}'s; runs trained on the same batches must share it",
                dir.display(),
                run_dirs[0].display()
            );
        }
    }

    let data = open_data(&first)?;
    let d_in = data.d_in;
    let mut needs = Vec::with_capacity(configs.len());
    for ((config, recorded), dir) in configs.iter().zip(&run_dirs) {
        if let Some(recorded) = recorded {
            check_same_data(recorded, &shard_infos(&data.train))?;
        }
        validate(config, d_in)?;
        let k_aux = if uses_auxk(config) { config.auxk_k } else { 0 };
        let candidates = config.architecture.row_candidates(config.k, config.d_sae);
        let needed = gpu_bytes_needed(d_in, config.d_sae, candidates, config.batch_size, k_aux);
        // Per-latent tensors larger than one storage binding are split into blocks of latents;
        // this fails only when a single latent's column cannot be bound, before anything is
        // allocated.
        let suggestion = "use a smaller dictionary or --batch-size";
        LatentBlocks::plan(d_in, config.d_sae, config.batch_size, gpu.binding_limit()).map_err(
            |e| {
                anyhow!(
                    "{}: {e}; the run needs about {} MiB of GPU memory in all; {suggestion}",
                    dir.display(),
                    needed >> 20
                )
            },
        )?;
        let name = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().to_string(),
        );
        needs.push((name, needed));
    }
    let feed_bytes = Feed::bytes(first.batch_size, d_in);
    let total: u64 = needs.iter().map(|(_, n)| n).sum::<u64>() + feed_bytes;
    tracing::info!("training needs about {} MiB of GPU memory", total >> 20);
    check_group_memory(gpu, &needs, feed_bytes)?;
    checked()?;

    for ((config, _), (dir, (_, needed))) in configs.iter().zip(run_dirs.iter().zip(&needs)) {
        let config_path = dir.join("config.json");
        if !options.resume || !config_path.exists() {
            let config_value =
                serde_json::to_value(config).context("recording the configuration")?;
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
    }

    let resumed = if options.resume {
        let found = common_checkpoint(&run_dirs);
        if found.is_none() {
            tracing::warn!(
                "no usable checkpoint common to {}; starting over",
                run_dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        found
    } else {
        None
    };
    let start_step = resumed
        .as_ref()
        .and_then(|found| found.first())
        .map_or(0, |(_, c)| c.step);
    if let (Some(found), false) = (&resumed, options.quiet) {
        if let Some((path, _)) = found.first() {
            eprintln!(
                "resuming from {} (step {start_step} of {})",
                if found.len() > 1 {
                    format!("step {start_step} of {} runs", found.len())
                } else {
                    path.display().to_string()
                },
                first.steps
            );
        }
    }
    let mut resumed = resumed.map(Vec::into_iter);
    // Runs that start from the same sample share its b_dec and input scale.
    let mut init_cache: Vec<(InitKey, (f32, Vec<f32>))> = Vec::new();
    let mut members: Vec<Member<'_>> = Vec::with_capacity(configs.len());
    for ((config, _), (run_dir, (_, needed))) in
        configs.into_iter().zip(run_dirs.into_iter().zip(needs))
    {
        let from_checkpoint = resumed.as_mut().and_then(Iterator::next);
        let (params, scale, tokens, fire_counts, restored) = match from_checkpoint {
            Some((_, ckpt)) => (
                ckpt.snapshot.params,
                ckpt.input_scale,
                ckpt.tokens,
                ckpt.fire_counts,
                Some(Restored {
                    moments: ckpt.snapshot.moments,
                    since_fired: ckpt.snapshot.since_fired,
                    theta: ckpt.snapshot.theta,
                    threshold_param: ckpt.snapshot.threshold_param,
                }),
            ),
            None => {
                let candidates = config.architecture.row_candidates(config.k, config.d_sae);
                let mut params = match config.architecture {
                    Architecture::Relu | Architecture::JumpRelu => {
                        SaeParams::init_relu(d_in, config.d_sae, candidates, config.seed)
                    }
                    _ => SaeParams::init_topk(d_in, config.d_sae, candidates, config.seed),
                };
                let sample_rows = match config.b_dec_init {
                    BDecInit::Mean => config.batch_size,
                    _ => config.init_sample_rows,
                }
                .max(1);
                let key = (sample_rows, config.b_dec_init, config.normalize_activations);
                let (scale, b_dec) = match init_cache.iter().find(|(k, _)| *k == key) {
                    Some((_, found)) => found.clone(),
                    None => {
                        let found = initial_b_dec(&data, &config, sample_rows)?;
                        init_cache.push((key, found.clone()));
                        found
                    }
                };
                params.b_dec = b_dec;
                (params, scale, 0, vec![0u64; config.d_sae], None)
            }
        };
        members.push(open_member(
            gpu,
            run_dir,
            config,
            params,
            scale,
            tokens,
            fire_counts,
            restored,
            needed,
            options,
            start_step,
        )?);
    }

    let mut feed = Feed::new(gpu, first.batch_size, d_in)?;
    let max_rows = first.steps * first.batch_size as u64;
    let stream = BatchStream::start(
        data.train.clone(),
        stream_config(&first, data.train_range, max_rows, start_step),
    )?;
    let bar = progress_bar(first.steps, start_step, options.quiet);
    let started = Instant::now();
    let (mut window_start, mut window_tokens) = (Instant::now(), 0u64);
    let mut step = start_step;
    let fault = injected_fault()?;
    // A GPU failure names the checkpoint to resume from (the group's oldest last one).
    let last_of = |members: &[Member<'_>]| -> Option<PathBuf> {
        members.first().and_then(|m| m.last_checkpoint.clone())
    };
    for batch in stream {
        if step >= first.steps {
            break;
        }
        if let Some((fault, at)) = fault {
            if at == step + 1 {
                gpu.inject_fault(fault);
            }
        }
        let batch = batch?;
        let logged = (step + 1) % first.log_every.max(1) == 0 || step + 1 == first.steps;
        let steps: Vec<MemberStep> = members
            .iter()
            .map(|m| MemberStep {
                scale: m.scale,
                lr: lr_at(m.config.lr, step, m.config.lr_warmup_steps, m.config.steps),
                step: step + 1,
                with_metrics: logged,
                penalty: penalty_at(&m.config, step),
            })
            .collect();
        feed.step(
            &batch,
            members
                .iter_mut()
                .map(|m| &mut m.trainer)
                .zip(steps.iter().copied()),
        )
        .map_err(|e| interrupted(e.into(), step + 1, last_of(&members).as_deref()))?;
        step += 1;
        window_tokens += batch.rows as u64;
        let tokens_per_s = if logged {
            let elapsed = window_start.elapsed().as_secs_f64().max(1e-9);
            let rate = window_tokens as f64 / elapsed;
            (window_start, window_tokens) = (Instant::now(), 0);
            rate
        } else {
            0.0
        };
        for (member, args) in members.iter_mut().zip(&steps) {
            member.tokens += batch.rows as u64;
            if logged {
                member.log.pending.push_back(LogContext {
                    step,
                    tokens: member.tokens,
                    lr: args.lr,
                    tokens_per_s,
                    skipped_nonfinite: batch.skipped_nonfinite,
                });
            }
            // Figures of earlier steps, as the GPU finishes them; never waits.
            member.drain_metrics(false, step, &bar)?;
        }
        bar.set_position(step);
        // Checkpoints and held-out evaluation are the synchronisation points.
        if options.stop_after == Some(step) && step < first.steps {
            bar.finish_and_clear();
            let mut reports = Vec::with_capacity(members.len());
            for member in &mut members {
                member.drain_metrics(true, step, &bar)?;
                member.save_checkpoint(step)?;
                reports.push(TrainReport {
                    steps: step,
                    tokens: member.tokens,
                    seconds: started.elapsed().as_secs_f64(),
                    tokens_per_s: 0.0,
                    heldout: None,
                    run_dir: member.run_dir.clone(),
                    peak_gpu_bytes: 0,
                });
            }
            return Ok(reports);
        }
        if first.checkpoint_every > 0 && step % first.checkpoint_every == 0 && step < first.steps {
            for member in &mut members {
                member.drain_metrics(true, step, &bar)?;
            }
            // Every run's checkpoint of this step is written before any is recorded as the
            // last: a failure names a step that every run can resume from.
            let mut saved = Vec::with_capacity(members.len());
            for member in &mut members {
                let last = member.last_checkpoint.clone();
                saved.push(
                    member
                        .save_checkpoint(step)
                        .map_err(|e| interrupted(e, step, last.as_deref()))?,
                );
            }
            for (member, path) in members.iter_mut().zip(saved) {
                member.last_checkpoint = Some(path);
            }
        }
        if first.eval_every > 0 && step % first.eval_every == 0 && step < first.steps {
            for member in &mut members {
                member.drain_metrics(true, step, &bar)?;
                if let Some(summary) = evaluate(gpu, member, &data)? {
                    let line = json!({"step": step, "tokens": member.tokens, "eval": summary});
                    writeln!(member.log.file, "{line}")?;
                }
            }
        }
    }
    for member in &mut members {
        member.drain_metrics(true, step, &bar)?;
    }
    bar.finish_and_clear();
    if step < first.steps {
        tracing::warn!("the data ran out after {step} of {} steps", first.steps);
    }
    let mut finals = Vec::with_capacity(members.len());
    for member in &mut members {
        finals.push(member.save_checkpoint(step)?);
    }
    for path in &finals {
        tracing::info!("final checkpoint {}", path.display());
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut reports = Vec::with_capacity(members.len());
    for member in &members {
        reports.push(finish_member(
            gpu, member, &data, step, start_step, seconds,
        )?);
    }
    Ok(reports)
}

/// What a run's initial b_dec and input scale depend on besides the data order: sample rows,
/// method, whether inputs are scaled.
type InitKey = (usize, BDecInit, bool);

/// The input scale and b_dec a new run starts from, estimated on its first training rows.
fn initial_b_dec(
    data: &Data,
    config: &TrainConfig,
    sample_rows: usize,
) -> anyhow::Result<(f32, Vec<f32>)> {
    let d_in = data.d_in;
    let mut sample = init_sample(data, config, sample_rows)?;
    let scale = if config.normalize_activations {
        input_scale(&sample, d_in)
    } else {
        1.0
    };
    if scale != 1.0 {
        sample.iter_mut().for_each(|v| *v /= scale);
    }
    let b_dec = match config.b_dec_init {
        BDecInit::GeometricMedian => geometric_median(&sample, d_in, 100, 1e-5),
        BDecInit::Mean => mean_row(&sample, d_in),
        BDecInit::Zeros => vec![0.0; d_in],
    };
    Ok((scale, b_dec))
}

/// The sparsity penalty's coefficient at (0-based) `step` (ReLU + L1's or JumpReLU's λ,
/// reached linearly over its warmup steps); 0 for the TopK family.
fn penalty_at(config: &TrainConfig, step: u64) -> f64 {
    let (lambda, warmup) = match config.architecture {
        Architecture::Relu => (config.l1_coefficient, config.l1_warmup_steps),
        Architecture::JumpRelu => (config.l0_coefficient, config.l0_warmup_steps),
        _ => return 0.0,
    };
    lambda * ((step + 1) as f64 / warmup.max(1) as f64).min(1.0)
}

/// JumpReLU's trained parameter at the start: θ₀ (or log θ₀) for every latent.
fn initial_threshold_param(config: &TrainConfig) -> Vec<f32> {
    let theta = config.jumprelu_init_threshold;
    let value = match config.jumprelu_threshold_param {
        ThresholdParam::Direct => theta,
        ThresholdParam::Log => theta.ln(),
    };
    vec![value as f32; config.d_sae]
}

/// AuxK revives the TopK family's dead latents; the ReLU family (SAELens `standard` and
/// `jumprelu`, dictionary_learning's April update) trains without it, whatever an older
/// config.json says.
pub fn uses_auxk(config: &TrainConfig) -> bool {
    config.auxk_alpha > 0.0 && !config.architecture.penalized()
}

/// What a checkpoint restores beyond the weights.
struct Restored {
    moments: Vec<(Vec<f32>, Vec<f32>)>,
    since_fired: Vec<u32>,
    theta: Option<f32>,
    threshold_param: Option<Vec<f32>>,
}

/// A run's trainer on the GPU, with its moments restored on resume and its metrics log open.
#[allow(clippy::too_many_arguments)]
fn open_member<'g>(
    gpu: &'g Gpu,
    run_dir: PathBuf,
    config: TrainConfig,
    params: SaeParams,
    scale: f32,
    tokens: u64,
    fire_counts: Vec<u64>,
    restored: Option<Restored>,
    needed_bytes: u64,
    options: &RunOptions,
    start_step: u64,
) -> anyhow::Result<Member<'g>> {
    let adam = AdamConfig {
        beta1: config.adam_beta1,
        beta2: config.adam_beta2,
        eps: config.adam_eps,
    };
    let auxk = uses_auxk(&config).then_some(AuxKConfig {
        alpha: config.auxk_alpha,
        k_aux: config.auxk_k,
    });
    let out_of_memory = |e| {
        anyhow!(
            "{}: {e} (the run needs about {} MiB of GPU memory)",
            run_dir.display(),
            needed_bytes >> 20
        )
    };
    let mut trainer = Trainer::new(
        gpu,
        &params,
        config.batch_size,
        adam,
        config.dead_tokens,
        auxk,
    )
    .map_err(out_of_memory)?;
    let widths = match config.architecture {
        Architecture::Matryoshka => {
            matryoshka_widths(&config.matryoshka_widths, config.d_sae).map_err(|e| anyhow!(e))?
        }
        _ => Vec::new(),
    };
    let jumprelu = match config.architecture {
        Architecture::JumpRelu => {
            let settings = JumpReluConfig {
                bandwidth: config.jumprelu_bandwidth as f32,
                penalty: config.l0_penalty,
                param: config.jumprelu_threshold_param,
                clip: None,
            };
            let initial = match (&restored, restored.as_ref().map(|r| &r.threshold_param)) {
                (_, Some(Some(found))) => found.clone(),
                (Some(_), _) => bail!(
                    "{}: the checkpoint holds no JumpReLU thresholds",
                    run_dir.display()
                ),
                (None, _) => initial_threshold_param(&config),
            };
            Some((settings, initial))
        }
        _ => None,
    };
    let setup = ArchitectureSetup {
        architecture: config.architecture,
        k: config.k,
        theta: restored.as_ref().and_then(|r| r.theta).unwrap_or(0.0),
        matryoshka_widths: widths,
        clip: config.clip_grad_norm.map(|c| c as f32),
        jumprelu,
    };
    trainer = trainer.for_architecture(&setup).map_err(|e| match e {
        GpuError::Shape { .. } => anyhow!("{}: {e}", run_dir.display()),
        other => out_of_memory(other),
    })?;
    if let Some(restored) = &restored {
        trainer.restore(&restored.moments, &restored.since_fired)?;
    }
    let gemm = EncoderShape {
        rows: config.batch_size,
        d_in: params.d_in,
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
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("{}: cannot open", metrics_path.display()))?;
    let log = MetricsLog {
        file,
        path: metrics_path,
        pending: VecDeque::new(),
        auxk_alpha: config.auxk_alpha,
        d_sae: config.d_sae,
    };
    Ok(Member {
        run_dir,
        config,
        trainer,
        scale,
        tokens,
        fire_counts,
        log,
        last_checkpoint: None,
    })
}

impl Member<'_> {
    /// Writes the metrics lines of the steps whose figures came back (with `wait`, of every
    /// step submitted); `step` names where a failure happened.
    fn drain_metrics(&mut self, wait: bool, step: u64, bar: &ProgressBar) -> anyhow::Result<()> {
        let last = self.last_checkpoint.as_deref();
        let ready = self
            .trainer
            .ready_metrics(wait)
            .map_err(|e| interrupted(e.into(), step, last))?;
        self.log.write(ready, bar, last)
    }

    /// Adds the fire counts since the last checkpoint to the totals and writes a checkpoint.
    fn save_checkpoint(&mut self, step: u64) -> anyhow::Result<PathBuf> {
        for (total, c) in self
            .fire_counts
            .iter_mut()
            .zip(self.trainer.take_fire_counts()?)
        {
            *total += u64::from(c);
        }
        checkpoint::save(
            &self.run_dir.join("checkpoints"),
            &Checkpoint {
                step,
                tokens: self.tokens,
                input_scale: self.scale,
                snapshot: self.trainer.snapshot()?,
                fire_counts: self.fire_counts.clone(),
            },
        )
    }
}

/// A run's SAE as it is used after training (and exported), on the trainer's input scale:
/// for BatchTopK, JumpReLU with θ for every latent; for TopK, the trained SAE itself.
fn inference_params(gpu: &Gpu, member: &Member<'_>) -> anyhow::Result<SaeParams> {
    // The weights and θ only: a checkpoint snapshot would also read every Adam moment back.
    let mut params = member.trainer.sae.download(gpu)?;
    if member.config.architecture == Architecture::Relu {
        params.activation = Activation::Relu;
    }
    if let Some(threshold) = member.trainer.thresholds()? {
        params.activation = Activation::JumpRelu { threshold };
    }
    if member.config.architecture.batch_selection() {
        let theta = member
            .trainer
            .theta()?
            .ok_or_else(|| anyhow!("a BatchTopK trainer without θ"))?;
        params.activation = Activation::JumpRelu {
            threshold: vec![theta; params.d_sae],
        };
    }
    Ok(params)
}

/// Held-out figures of a run, or `None` without held-out data: of the SAE as it is used after
/// training ([`inference_params`]), as `sae eval` computes them.
fn evaluate(gpu: &Gpu, member: &Member<'_>, data: &Data) -> anyhow::Result<Option<EvalSummary>> {
    if data.eval.is_empty() {
        return Ok(None);
    }
    let config = &member.config;
    let mut stream_cfg = StreamConfig::sequential(config.batch_size);
    stream_cfg.range = data.eval_range;
    stream_cfg.skip_nonfinite = config.skip_nonfinite;
    let inference;
    let sae = match config.architecture {
        Architecture::TopK => &member.trainer.sae,
        _ => {
            inference = GpuSae::upload(gpu, &inference_params(gpu, member)?, config.batch_size)?;
            &inference
        }
    };
    let evaluator = Evaluator::new(gpu, sae, config.batch_size)?;
    let acc: EvalAccumulator = evaluator.run(
        BatchStream::start(data.eval.clone(), stream_cfg)?,
        member.scale,
        |_| {},
    )?;
    Ok(Some(acc.summary()))
}

/// A finished run's held-out figures, density, exports, summary and plots.
fn finish_member(
    gpu: &Gpu,
    member: &Member<'_>,
    data: &Data,
    step: u64,
    start_step: u64,
    seconds: f64,
) -> anyhow::Result<TrainReport> {
    let (config, run_dir, tokens) = (&member.config, &member.run_dir, member.tokens);
    let heldout = evaluate(gpu, member, data)?;
    let mut params = inference_params(gpu, member)?;
    params.fold_input_scale(member.scale);

    // Feature density over the training tokens.
    let log10_density = crate::analysis::hist::log10_density(&member.fire_counts, tokens);
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
    let trained = step.saturating_sub(start_step) * config.batch_size as u64;
    let report = TrainReport {
        steps: step,
        tokens,
        seconds,
        tokens_per_s: trained as f64 / seconds.max(1e-9),
        heldout,
        run_dir: run_dir.clone(),
        peak_gpu_bytes: gpu.allocations.counts().peak_bytes,
    };
    write_json_atomic(&run_dir.join("summary.json"), &report)?;
    if let Err(error) = crate::analysis::plots::training_plots(
        run_dir,
        &run_dir.join("metrics.jsonl"),
        &log10_density,
    ) {
        tracing::warn!("could not draw the plots: {error:#}");
    }
    Ok(report)
}
