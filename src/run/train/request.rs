//! What the user asked `sae train` for, resolved against the data once: the shards opened to
//! learn d_in and the rows, the budget in steps, every default filled in (the quick start's
//! where no shards are given), the settings checked against the architectures that read them,
//! and the plan: one run, a sweep, or a resume of either.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};

use super::config::{
    default_format, AuxKSettings, BDecInit, ComputeConfig, DataConfig, ExportFormat, InitConfig,
    OptimConfig, OutputConfig, TrainConfig,
};
use super::report::TrainReport;
use super::run_dir::{refuse_existing_run, RunOptions};
use super::sweep::{plan, train_sweep, SweepAxes, SweepFile, SweepReport};
use crate::data::parts::Part;
use crate::data::synth::{write_synthetic, SynthConfig};
use crate::data::{check_pairs, expand_inputs, open_shards, RowRange, Shard};
use crate::gpu::kernels::topk::MAX_K;
use crate::gpu::{Gpu, MatmulChoice};
use crate::sae::arch::{ArchSettings, Architecture, L0Penalty, ModelConfig, ThresholdParam};
use crate::sae::forward::DEFAULT_CAP;
use crate::sae::schedule::default_lr;

/// `sae train`'s flags, as given (`None` and empty lists: not given). Several values of the
/// list-valued sweep axes make a sweep.
#[derive(Clone, Debug)]
pub struct TrainRequest {
    /// Shards; none: the synthetic quick start, generated into the run directory.
    pub shards: Vec<PathBuf>,
    pub out: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    pub overwrite: bool,
    pub quiet: bool,
    pub tune: bool,
    pub stop_after: Option<u64>,
    pub sweep_part: Option<Part>,
    pub tensor: String,
    /// A transcoder's targets, file for file beside the shards (`--target`).
    pub target: Vec<PathBuf>,
    /// The targets' tensor (`--target-tensor`): in the shards themselves without `--target`.
    pub target_tensor: Option<String>,
    /// Held-out targets beside `--eval` (`--eval-target`).
    pub eval_target: Vec<PathBuf>,
    /// `--transcoder`: implied by a target; without one, an error.
    pub transcoder: bool,
    /// `--skip`: a skip-transcoder.
    pub skip: bool,
    // The model and each architecture's settings.
    pub architecture: Vec<Architecture>,
    pub k: Vec<usize>,
    pub expansion_factor: Vec<usize>,
    pub d_sae: Option<usize>,
    pub cap: Option<usize>,
    pub matryoshka_widths: Vec<usize>,
    pub l1_coefficient: Vec<f64>,
    pub l1_warmup_steps: Option<u64>,
    pub l0_coefficient: Vec<f64>,
    pub l0_warmup_steps: Option<u64>,
    pub l0_penalty: Option<L0Penalty>,
    pub jumprelu_bandwidth: Option<f64>,
    pub jumprelu_init_threshold: Option<f64>,
    pub jumprelu_threshold_param: Option<ThresholdParam>,
    pub clip_grad_norm: Option<f64>,
    // Data and budget.
    pub batch_size: Option<usize>,
    pub tokens: Option<u64>,
    pub epochs: Option<u64>,
    pub eval: Vec<PathBuf>,
    pub eval_fraction: f64,
    pub shuffle_buffer: usize,
    pub data_seed: Option<u64>,
    pub skip_nonfinite: bool,
    // Optimiser, initialisation, AuxK.
    pub lr: Vec<f64>,
    pub lr_warmup_steps: Option<u64>,
    pub lr_decay_steps: Option<u64>,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    pub seed: Vec<u64>,
    pub b_dec_init: BDecInit,
    pub normalize_activations: bool,
    pub auxk_alpha: f32,
    pub auxk_k: Option<usize>,
    pub dead_tokens: u64,
    // Outputs.
    pub checkpoint_every: u64,
    pub log_every: u64,
    pub eval_every: u64,
    pub format: Option<ExportFormat>,
    pub matmul: MatmulChoice,
}

/// What `sae train` will do.
pub enum TrainPlan {
    /// One run (`None`: resume the run in `options.run_dir` from its own config.json).
    Run {
        config: Option<Box<TrainConfig>>,
        options: RunOptions,
    },
    /// A sweep in `dir`, or part of one (`None`: resume it from its sweep.json).
    Sweep {
        plan: Option<SweepFile>,
        dir: PathBuf,
        part: Option<Part>,
        options: RunOptions,
    },
}

/// What `sae train` did.
pub enum TrainOutcome {
    Run(TrainReport),
    Sweep(SweepReport),
}

impl TrainPlan {
    pub fn run(self, gpu: &Gpu) -> anyhow::Result<TrainOutcome> {
        match self {
            TrainPlan::Run { config, options } => {
                super::job::train(gpu, config.map(|c| *c), &options).map(TrainOutcome::Run)
            }
            TrainPlan::Sweep {
                plan,
                dir,
                part,
                options,
            } => train_sweep(gpu, plan, &dir, part, &options).map(TrainOutcome::Sweep),
        }
    }
}

/// Resolves `request` into a plan (writing the quick start's synthetic data when no shards are
/// given).
pub fn resolve(request: TrainRequest) -> anyhow::Result<TrainPlan> {
    if let Some(dir) = request.resume.clone() {
        return resume_plan(&request, dir);
    }
    let run_dir = request.out.clone().unwrap_or_else(default_run_dir);
    let quickstart = request.shards.is_empty();
    let inputs = if quickstart {
        quickstart_data(&run_dir, &request)?
    } else {
        request.shards.clone()
    };
    let (base, d_in, d_out) = base_config(&request, inputs, quickstart)?;
    let options = options(&request, run_dir.clone(), false);
    let axes = sweep_axes(&request, &base, d_in);
    if axes.is_sweep() || request.sweep_part.is_some() {
        let lr_for = |d_sae| default_lr_for(d_sae, quickstart);
        let sweep = plan(&base, d_in, &axes, lr_for)?;
        for run in &sweep.runs {
            run.config
                .validate(d_in, d_out)
                .map_err(|e| anyhow!("sweep member {}: {e}", run.dir))?;
        }
        return Ok(TrainPlan::Sweep {
            plan: Some(sweep),
            dir: run_dir,
            part: request.sweep_part,
            options,
        });
    }
    Ok(TrainPlan::Run {
        config: Some(Box::new(base)),
        options,
    })
}

fn options(request: &TrainRequest, run_dir: PathBuf, resume: bool) -> RunOptions {
    RunOptions {
        run_dir,
        resume,
        overwrite: request.overwrite && !resume,
        quiet: request.quiet,
        stop_after: request.stop_after,
        tune: request.tune,
    }
}

/// `--resume DIR`: a sweep (it has sweep.json, or holds run directories and no config.json of
/// its own) or a run.
fn resume_plan(request: &TrainRequest, dir: PathBuf) -> anyhow::Result<TrainPlan> {
    let options = options(request, dir.clone(), true);
    let is_sweep =
        dir.join("sweep.json").exists() || !dir.join("config.json").exists() && holds_runs(&dir);
    if is_sweep {
        return Ok(TrainPlan::Sweep {
            plan: None,
            dir,
            part: request.sweep_part,
            options,
        });
    }
    if request.sweep_part.is_some() {
        bail!(
            "--sweep-part: {} is not a sweep (no sweep.json)",
            dir.display()
        );
    }
    Ok(TrainPlan::Run {
        config: None,
        options,
    })
}

/// A directory of run directories (a sweep whose sweep.json is gone).
fn holds_runs(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .any(|entry| entry.path().join("config.json").exists())
}

fn default_run_dir() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from("runs").join(format!("run-{secs}"))
}

/// The quick start's synthetic shards, written into the (new) run directory.
fn quickstart_data(run_dir: &Path, request: &TrainRequest) -> anyhow::Result<Vec<PathBuf>> {
    // Checked before the synthetic data is written into the directory.
    refuse_existing_run(run_dir, false, request.overwrite)?;
    let synth = SynthConfig::default();
    let dir = run_dir.join("synthetic-data");
    if !request.quiet {
        eprintln!(
            "no shards given: generating a synthetic dataset ({} rows, d_in {}, {} true features) in {}",
            synth.rows_per_shard * synth.shards,
            synth.d_in,
            synth.n_features,
            dir.display()
        );
    }
    write_synthetic(&synth, &dir)
}

/// The learning rate a run of `d_sae` latents gets unless given: sparsify's, or 4e-3 for the
/// short quick start.
fn default_lr_for(d_sae: usize, quickstart: bool) -> f64 {
    if quickstart {
        4e-3
    } else {
        default_lr(d_sae)
    }
}

/// The first value of a flag that takes several only in a sweep.
fn one<T: Copy>(values: &[T], default: T) -> T {
    values.first().copied().unwrap_or(default)
}

/// The targets' width (d_out) when the request pairs the shards with targets, checked pair by
/// pair against `shards`.
fn target_width(
    request: &TrainRequest,
    inputs: &[PathBuf],
    shards: &[Shard],
) -> anyhow::Result<Option<usize>> {
    if request.target.is_empty() && request.target_tensor.is_none() {
        if request.transcoder || request.skip {
            let flag = if request.skip {
                "--skip"
            } else {
                "--transcoder"
            };
            bail!("{flag}: a transcoder needs targets: --target FILES… or --target-tensor NAME");
        }
        return Ok(None);
    }
    let paths = if request.target.is_empty() {
        inputs
    } else {
        &request.target
    };
    let tensor = request.target_tensor.as_deref().unwrap_or(&request.tensor);
    let targets = open_shards(&expand_inputs(paths)?, tensor, None)?;
    Ok(Some(check_pairs(shards, &targets)?))
}

/// The configuration of the first (or only) member, every default resolved against the data,
/// and the data's d_in and d_out (the targets' width; d_in for an SAE).
fn base_config(
    request: &TrainRequest,
    inputs: Vec<PathBuf>,
    quickstart: bool,
) -> anyhow::Result<(TrainConfig, usize, usize)> {
    let shards = open_shards(&expand_inputs(&inputs)?, &request.tensor, None)?;
    let d_in = shards[0].d_in;
    let d_out = target_width(request, &inputs, &shards)?;
    let batch_size = request
        .batch_size
        .unwrap_or(if quickstart { 512 } else { 4096 });
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let eval_fraction = if request.eval.is_empty() {
        request.eval_fraction
    } else {
        0.0
    };
    let train_range = if eval_fraction > 0.0 {
        RowRange::Head(eval_fraction)
    } else {
        RowRange::All
    };
    let rows: u64 = shards
        .iter()
        .map(|s| train_range.range(s.rows).len() as u64)
        .sum();
    let steps = steps(request, rows, batch_size, quickstart)?;
    let mut model = model_config(request, d_in, steps, quickstart)?;
    model.transcoder = d_out.is_some();
    model.skip = request.skip;
    let architecture = model.architecture;
    let config = TrainConfig {
        data: DataConfig {
            inputs,
            tensor: request.tensor.clone(),
            targets: request.target.clone(),
            target_tensor: request.target_tensor.clone(),
            eval_inputs: request.eval.clone(),
            eval_targets: request.eval_target.clone(),
            eval_fraction,
            batch_size,
            steps,
            shuffle_buffer: request.shuffle_buffer,
            data_seed: request.data_seed,
            skip_nonfinite: request.skip_nonfinite,
        },
        optim: OptimConfig {
            lr: one(&request.lr, default_lr_for(model.d_sae, quickstart)),
            lr_warmup_steps: request.lr_warmup_steps.unwrap_or((steps / 10).min(1000)),
            lr_decay_steps: Some(request.lr_decay_steps.unwrap_or(steps / 5)),
            adam_beta1: request.adam_beta1,
            adam_beta2: request.adam_beta2,
            adam_eps: request.adam_eps,
        },
        init: InitConfig {
            seed: one(&request.seed, 0),
            b_dec_init: request.b_dec_init,
            normalize_activations: request.normalize_activations,
            init_sample_rows: 32768,
        },
        auxk: AuxKSettings {
            // Architectures without AuxK say so in config.json.
            auxk_alpha: if architecture.spec().uses_auxk() {
                request.auxk_alpha
            } else {
                0.0
            },
            // sparsify's k_aux: half the width of what is reconstructed.
            auxk_k: request.auxk_k.unwrap_or((d_out.unwrap_or(d_in) / 2).max(1)),
            dead_tokens: request.dead_tokens,
        },
        output: OutputConfig {
            eval_every: request.eval_every,
            checkpoint_every: request.checkpoint_every,
            log_every: request.log_every,
            format: request
                .format
                .unwrap_or(default_format(architecture, model.transcoder)),
        },
        compute: ComputeConfig {
            matmul: request.matmul,
        },
        model,
    };
    Ok((config, d_in, d_out.unwrap_or(d_in)))
}

/// The budget in steps: `--tokens`, or `--epochs` over the training rows.
fn steps(
    request: &TrainRequest,
    rows: u64,
    batch_size: usize,
    quickstart: bool,
) -> anyhow::Result<u64> {
    let steps = match request.tokens {
        Some(tokens) => tokens / batch_size as u64,
        None => rows * request.epochs.unwrap_or(if quickstart { 2 } else { 1 }) / batch_size as u64,
    };
    if steps == 0 {
        bail!(
            "the budget ({} training rows{}) is smaller than one batch of {batch_size}; lower --batch-size",
            rows,
            request.tokens.map_or(String::new(), |t| format!(", --tokens {t}"))
        );
    }
    Ok(steps)
}

/// The model of the first member: its architecture, size, k (or cap) and settings, each
/// setting given checked against the architectures that read it.
fn model_config(
    request: &TrainRequest,
    d_in: usize,
    steps: u64,
    quickstart: bool,
) -> anyhow::Result<ModelConfig> {
    let architecture = one(&request.architecture, Architecture::TopK);
    check_settings_apply(request, architecture)?;
    let cap = request.cap.unwrap_or(DEFAULT_CAP);
    if cap == 0 || cap > MAX_K {
        bail!("--cap {cap}: must be between 1 and {MAX_K}");
    }
    let expansion_default = if quickstart { 4 } else { 8 };
    let d_sae = match (request.d_sae, request.expansion_factor.first()) {
        (Some(d_sae), _) => d_sae,
        (None, Some(e)) => d_in * e,
        (None, None) => d_in * expansion_default,
    };
    let penalized = !architecture.spec().uses_auxk();
    let k = if penalized {
        cap.min(d_sae)
    } else {
        one(&request.k, if quickstart { 8 } else { 32 })
    };
    Ok(ModelConfig {
        architecture,
        settings: settings(request, steps),
        k,
        d_sae,
        transcoder: false,
        skip: false,
    })
}

/// Each architecture's settings: the given ones, defaults for the rest.
fn settings(request: &TrainRequest, steps: u64) -> ArchSettings {
    let mut s = ArchSettings::defaults(steps);
    s.matryoshka.matryoshka_widths = request.matryoshka_widths.clone();
    let relu = &mut s.relu;
    relu.l1_coefficient = one(&request.l1_coefficient, relu.l1_coefficient);
    relu.l1_warmup_steps = request.l1_warmup_steps.unwrap_or(relu.l1_warmup_steps);
    s.penalized.clip_grad_norm = match request.clip_grad_norm {
        Some(0.0) => None,
        Some(c) => Some(c),
        None => s.penalized.clip_grad_norm,
    };
    let j = &mut s.jumprelu;
    j.l0_coefficient = one(&request.l0_coefficient, j.l0_coefficient);
    j.l0_warmup_steps = request.l0_warmup_steps.unwrap_or(j.l0_warmup_steps);
    j.l0_penalty = request.l0_penalty.unwrap_or(j.l0_penalty);
    j.jumprelu_bandwidth = request.jumprelu_bandwidth.unwrap_or(j.jumprelu_bandwidth);
    j.jumprelu_init_threshold = request
        .jumprelu_init_threshold
        .unwrap_or(j.jumprelu_init_threshold);
    j.jumprelu_threshold_param = request
        .jumprelu_threshold_param
        .unwrap_or(j.jumprelu_threshold_param);
    s
}

/// The settings the request gives (as their keys), each read by some architecture.
fn given_settings(request: &TrainRequest) -> Vec<&'static str> {
    [
        ("matryoshka_widths", !request.matryoshka_widths.is_empty()),
        ("l1_coefficient", !request.l1_coefficient.is_empty()),
        ("l1_warmup_steps", request.l1_warmup_steps.is_some()),
        ("l0_coefficient", !request.l0_coefficient.is_empty()),
        ("l0_warmup_steps", request.l0_warmup_steps.is_some()),
        ("l0_penalty", request.l0_penalty.is_some()),
        ("jumprelu_bandwidth", request.jumprelu_bandwidth.is_some()),
        (
            "jumprelu_init_threshold",
            request.jumprelu_init_threshold.is_some(),
        ),
        (
            "jumprelu_threshold_param",
            request.jumprelu_threshold_param.is_some(),
        ),
        ("clip_grad_norm", request.clip_grad_norm.is_some()),
        ("cap", request.cap.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, given)| given.then_some(key))
    .collect()
}

/// A setting given to runs of architectures none of which reads it is refused, naming the
/// flag and the architectures it applies to; so is `--k` for the ReLU family alone.
fn check_settings_apply(request: &TrainRequest, first: Architecture) -> anyhow::Result<()> {
    let chosen = if request.architecture.is_empty() {
        vec![Architecture::TopK]
    } else {
        request.architecture.clone()
    };
    let only_capped = !request.architecture.is_empty()
        && chosen.iter().all(|a| a.spec().settings().contains(&"cap"));
    if only_capped && !request.k.is_empty() {
        bail!(
            "--k does not apply to --architecture {} (its codes are capped by --cap)",
            first.name()
        );
    }
    for key in given_settings(request) {
        let readers = Architecture::reading(key);
        if !chosen.iter().any(|a| readers.contains(a)) {
            let names: Vec<&str> = readers.iter().map(|a| a.name()).collect();
            bail!(
                "--{} applies to --architecture {}, not {}",
                key.replace('_', "-"),
                names.join(" or "),
                first.name()
            );
        }
    }
    Ok(())
}

/// The sweep's axes: every list-valued flag, each architecture's sparsity by its own setting.
fn sweep_axes(request: &TrainRequest, base: &TrainConfig, d_in: usize) -> SweepAxes {
    let sizes: Vec<usize> = match request.d_sae {
        Some(d_sae) => vec![d_sae],
        None if request.expansion_factor.is_empty() => vec![base.model.d_sae],
        None => request.expansion_factor.iter().map(|e| d_in * e).collect(),
    };
    SweepAxes {
        relu_cap: request.cap.unwrap_or(DEFAULT_CAP),
        l1_coefficient: request.l1_coefficient.clone(),
        l0_coefficient: request.l0_coefficient.clone(),
        architecture: request.architecture.clone(),
        format: request.format,
        k: request.k.clone(),
        d_sae: sizes,
        lr: request.lr.clone(),
        seed: request.seed.clone(),
    }
}
