//! `sae train`: flags → a [`TrainConfig`], the bundled default when no data is given.

use std::path::PathBuf;

use anyhow::{anyhow, bail};
use clap::Args;

use super::GpuArgs;
use crate::data::parts::Part;
use crate::data::synth::{write_synthetic, SynthConfig};
use crate::data::{expand_inputs, open_shards, RowRange};
use crate::gpu::kernels::topk::MAX_K;
use crate::run::sweep::{plan, train_sweep, SweepAxes, SweepReport};
use crate::run::train::{
    default_format, refuse_existing_run, train, validate, BDecInit, ExportFormat, RunOptions,
    TrainConfig,
};
use crate::sae::architecture::{
    Architecture, L0Penalty, ThresholdParam, DEFAULT_CLIP_GRAD_NORM, DEFAULT_JUMPRELU_BANDWIDTH,
    DEFAULT_JUMPRELU_INIT_THRESHOLD, DEFAULT_PENALTY_COEFFICIENT,
};
use crate::sae::forward::DEFAULT_CAP;
use crate::sae::schedule::default_lr;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Activation shards: files, directories or glob patterns. None: train on a small
    /// synthetic dataset generated into the run directory (the quick start).
    shards: Vec<PathBuf>,
    /// Run directory (default: runs/run-<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["out", "shards", "overwrite"])]
    resume: Option<PathBuf>,
    /// Replace a run already in --out.
    #[arg(long)]
    overwrite: bool,
    /// Name of the activation tensor in the shards.
    #[arg(long, default_value = "activations")]
    tensor: String,
    /// What to train: topk (k per token), batchtopk (k·B over each batch of B tokens),
    /// matryoshka (batchtopk whose nested prefixes each reconstruct the input; both exported as
    /// SAELens jumprelu with the learned threshold), relu (ReLU + decoder-norm weighted L1,
    /// exported as SAELens standard) or jumprelu (a trained threshold per latent and an L0
    /// penalty). Several, comma-separated, sweep them.
    #[arg(long, value_enum, value_delimiter = ',')]
    architecture: Vec<Architecture>,
    /// ReLU + L1: the penalty's coefficient λ (default 1, SAELens'); several sweep it.
    #[arg(long, value_delimiter = ',')]
    l1_coefficient: Vec<f64>,
    /// ReLU + L1: steps over which λ rises linearly from 0 (default 5% of the steps).
    #[arg(long)]
    l1_warmup_steps: Option<u64>,
    /// JumpReLU: the L0 penalty's coefficient λ (default 1, SAELens'); several sweep it.
    #[arg(long, value_delimiter = ',')]
    l0_coefficient: Vec<f64>,
    /// JumpReLU: steps over which λ rises linearly from 0 (default 5% of the steps).
    #[arg(long)]
    l0_warmup_steps: Option<u64>,
    /// JumpReLU: the L0 penalty, step (DeepMind; λ·Σ H(h − θ)) or tanh (Anthropic;
    /// λ·Σ tanh(4·f·‖W_dec‖)). Default step.
    #[arg(long, value_enum)]
    l0_penalty: Option<L0Penalty>,
    /// JumpReLU: bandwidth ε of the straight-through estimators' rectangle kernel (default
    /// 0.05, SAELens').
    #[arg(long, allow_negative_numbers = true)]
    jumprelu_bandwidth: Option<f64>,
    /// JumpReLU: every latent's threshold at the start (default 0.01, SAELens').
    #[arg(long, allow_negative_numbers = true)]
    jumprelu_init_threshold: Option<f64>,
    /// JumpReLU: train θ itself (direct, SAELens; default) or log θ (log, DeepMind's paper).
    #[arg(long, value_enum)]
    jumprelu_threshold_param: Option<ThresholdParam>,
    /// ReLU and JumpReLU: clip the gradient's global norm to this (default 1; 0 turns clipping
    /// off).
    #[arg(long)]
    clip_grad_norm: Option<f64>,
    /// ReLU and JumpReLU: the most codes kept per row while training (the largest; default
    /// 256, as `sae eval`'s --cap).
    #[arg(long)]
    cap: Option<usize>,
    /// Matryoshka's nested prefix widths, strictly increasing (the full width is appended when
    /// missing); default d/16, d/8, d/4, d/2, d.
    #[arg(long, value_delimiter = ',')]
    matryoshka_widths: Vec<usize>,
    /// Latents kept per token (default 32; 8 for the synthetic quick start). Several,
    /// comma-separated, sweep them (as do several values of --expansion-factor, --lr and
    /// --seed): every combination trains from one pass over the data, into OUT/<member>/, with
    /// OUT/sweep.json listing them.
    #[arg(long, value_delimiter = ',')]
    k: Vec<usize>,
    /// d_sae = expansion factor × d_in (default 8; 4 for the quick start).
    #[arg(long, conflicts_with = "d_sae", value_delimiter = ',')]
    expansion_factor: Vec<usize>,
    /// Dictionary size.
    #[arg(long)]
    d_sae: Option<usize>,
    /// Tokens per optimiser step (default 4096; 512 for the quick start).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate (default 2e-4·√(2¹⁴ / d_sae); 4e-3 for the short quick start).
    #[arg(long, value_delimiter = ',')]
    lr: Vec<f64>,
    /// Linear warmup steps (default: 10% of the steps, at most 1000).
    #[arg(long)]
    lr_warmup_steps: Option<u64>,
    /// Training budget in tokens.
    #[arg(long, conflicts_with = "epochs")]
    tokens: Option<u64>,
    /// Passes over the training data (default 1; 2 for the quick start).
    #[arg(long)]
    epochs: Option<u64>,
    /// Seed of the initial weights (and, without --data-seed, of the data order).
    #[arg(long, value_delimiter = ',')]
    seed: Vec<u64>,
    /// Seed of the data order (shard order and shuffle); default: the (first) --seed. A
    /// sweep's members all see the data in this order.
    #[arg(long)]
    data_seed: Option<u64>,
    /// Train only part I of N of the sweep (members I, I + N, … in sweep.json order), into
    /// the shared --out; run N processes (one per GPU or machine) with I = 0 … N − 1.
    #[arg(long, value_name = "I/N", value_parser = parse_sweep_part)]
    sweep_part: Option<Part>,
    /// Write a checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 1000)]
    checkpoint_every: u64,
    /// Append a metrics line every N steps.
    #[arg(long, default_value_t = 10)]
    log_every: u64,
    /// Held-out shards for evaluation.
    #[arg(long, num_args = 1..)]
    eval: Vec<PathBuf>,
    /// Without --eval: hold out this fraction of each training shard (its last rows).
    #[arg(long, default_value_t = 0.02)]
    eval_fraction: f64,
    /// Evaluate on the held-out data every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    eval_every: u64,
    /// Rows in the shuffle pool (0: file order).
    #[arg(long, default_value_t = 8192)]
    shuffle_buffer: usize,
    #[arg(long, value_enum, default_value_t = BDecInit::GeometricMedian)]
    b_dec_init: BDecInit,
    /// Scale inputs so E‖x‖² = 1 while training (folded back into the saved weights).
    #[arg(long)]
    normalize_activations: bool,
    /// Weight of the AuxK dead-latent loss (0 disables it).
    #[arg(long, default_value_t = 1.0 / 32.0)]
    auxk_alpha: f32,
    /// Dead latents AuxK decodes per token (default d_in / 2, at most 512).
    #[arg(long)]
    auxk_k: Option<usize>,
    /// A latent is dead after this many tokens without firing.
    #[arg(long, default_value_t = 10_000_000)]
    dead_tokens: u64,
    /// Skip (and count) rows holding NaN or Inf instead of stopping.
    #[arg(long)]
    skip_nonfinite: bool,
    #[arg(long, default_value_t = 0.9)]
    adam_beta1: f64,
    #[arg(long, default_value_t = 0.999)]
    adam_beta2: f64,
    #[arg(long, default_value_t = 1e-8)]
    adam_eps: f64,
    /// Checkpoint layouts to export at the end (default: both for topk, saelens for the other
    /// architectures, which sparsify cannot run).
    #[arg(long, value_enum)]
    format: Option<ExportFormat>,
    /// No progress bar or summary.
    #[arg(long)]
    quiet: bool,
    /// Do not time the encoder GEMM's tile shapes on a new adapter (use a cached choice or the
    /// default; results are the same either way).
    #[arg(long, env = "SAE_NO_TUNE")]
    no_tune: bool,
    /// Checkpoint and stop after this many steps (continue later with --resume).
    #[arg(long, value_name = "STEPS")]
    stop_after: Option<u64>,
    #[command(flatten)]
    gpu: GpuArgs,
}

fn default_run_dir() -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from("runs").join(format!("run-{secs}"))
}

fn parse_sweep_part(text: &str) -> Result<Part, String> {
    text.parse::<Part>()
        .map_err(|e| e.replace("--part", "--sweep-part"))
}

/// One value of a flag that takes several only in a sweep.
fn one<T: Copy>(values: &[T], default: T) -> T {
    values.first().copied().unwrap_or(default)
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let gpu = args.gpu.open()?;
    if let Some(run_dir) = args.resume.clone() {
        let options = RunOptions {
            run_dir: run_dir.clone(),
            resume: true,
            overwrite: false,
            quiet: args.quiet,
            stop_after: args.stop_after,
            tune: !args.no_tune,
        };
        if run_dir.join("sweep.json").exists()
            || !run_dir.join("config.json").exists() && holds_runs(&run_dir)
        {
            let report = train_sweep(&gpu, None, &run_dir, args.sweep_part, &options)?;
            return print_sweep(&report, args.quiet);
        }
        if args.sweep_part.is_some() {
            bail!(
                "--sweep-part: {} is not a sweep (no sweep.json)",
                run_dir.display()
            );
        }
        let report = train(&gpu, None, &options)?;
        return print_report(&report, args.quiet);
    }
    let run_dir = args.out.clone().unwrap_or_else(default_run_dir);
    let quickstart = args.shards.is_empty();
    let options = RunOptions {
        run_dir: run_dir.clone(),
        resume: false,
        overwrite: args.overwrite,
        quiet: args.quiet,
        stop_after: args.stop_after,
        tune: !args.no_tune,
    };
    let inputs = if quickstart {
        // Checked before the synthetic data is written into the directory.
        refuse_existing_run(&run_dir, false, args.overwrite)?;
        let synth = SynthConfig::default();
        if !args.quiet {
            eprintln!(
                "no shards given: generating a synthetic dataset ({} rows, d_in {}, {} true features) in {}",
                synth.rows_per_shard * synth.shards,
                synth.d_in,
                synth.n_features,
                run_dir.join("synthetic-data").display()
            );
        }
        write_synthetic(&synth, &run_dir.join("synthetic-data"))?
    } else {
        args.shards.clone()
    };
    let shards = open_shards(&expand_inputs(&inputs)?, &args.tensor, None)?;
    let d_in = shards[0].d_in;
    let expansion_default = if quickstart { 4 } else { 8 };
    let sizes: Vec<usize> = match args.d_sae {
        Some(d_sae) => vec![d_sae],
        None if args.expansion_factor.is_empty() => vec![d_in * expansion_default],
        None => args.expansion_factor.iter().map(|e| d_in * e).collect(),
    };
    let d_sae = sizes[0];
    let batch_size = args
        .batch_size
        .unwrap_or(if quickstart { 512 } else { 4096 });
    if batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let eval_fraction = if args.eval.is_empty() {
        args.eval_fraction
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
    let steps = match args.tokens {
        Some(tokens) => tokens / batch_size as u64,
        None => rows * args.epochs.unwrap_or(if quickstart { 2 } else { 1 }) / batch_size as u64,
    };
    if steps == 0 {
        bail!(
            "the budget ({} training rows{}) is smaller than one batch of {batch_size}; lower --batch-size",
            rows,
            args.tokens.map_or(String::new(), |t| format!(", --tokens {t}"))
        );
    }
    let architecture = one(&args.architecture, Architecture::TopK);
    let relu_cap = args.cap.unwrap_or(DEFAULT_CAP);
    let only_penalized =
        !args.architecture.is_empty() && args.architecture.iter().all(|a| a.penalized());
    if only_penalized && !args.k.is_empty() {
        bail!(
            "--k does not apply to --architecture {} (its codes are capped by --cap)",
            architecture.name()
        );
    }
    let any = |wanted: &[Architecture]| args.architecture.iter().any(|a| wanted.contains(a));
    let flags_for = [
        (
            "relu",
            any(&[Architecture::Relu]),
            vec![
                ("--l1-coefficient", !args.l1_coefficient.is_empty()),
                ("--l1-warmup-steps", args.l1_warmup_steps.is_some()),
            ],
        ),
        (
            "jumprelu",
            any(&[Architecture::JumpRelu]),
            vec![
                ("--l0-coefficient", !args.l0_coefficient.is_empty()),
                ("--l0-warmup-steps", args.l0_warmup_steps.is_some()),
                ("--l0-penalty", args.l0_penalty.is_some()),
                ("--jumprelu-bandwidth", args.jumprelu_bandwidth.is_some()),
                (
                    "--jumprelu-init-threshold",
                    args.jumprelu_init_threshold.is_some(),
                ),
                (
                    "--jumprelu-threshold-param",
                    args.jumprelu_threshold_param.is_some(),
                ),
            ],
        ),
        (
            "relu or jumprelu",
            any(&[Architecture::Relu, Architecture::JumpRelu]),
            vec![
                ("--clip-grad-norm", args.clip_grad_norm.is_some()),
                ("--cap", args.cap.is_some()),
            ],
        ),
    ];
    for (applies_to, wanted, flags) in flags_for {
        if let (false, Some((flag, _))) = (wanted, flags.iter().find(|(_, given)| *given)) {
            bail!(
                "{flag} applies to --architecture {applies_to}, not {}",
                architecture.name()
            );
        }
    }
    if relu_cap == 0 || relu_cap > MAX_K {
        bail!("--cap {relu_cap}: must be between 1 and {MAX_K}");
    }
    let lr_for = |d_sae: usize| if quickstart { 4e-3 } else { default_lr(d_sae) };
    let config = TrainConfig {
        inputs,
        tensor: args.tensor.clone(),
        eval_inputs: args.eval.clone(),
        eval_fraction,
        eval_every: args.eval_every,
        architecture: one(&args.architecture, Architecture::TopK),
        matryoshka_widths: args.matryoshka_widths.clone(),
        l1_coefficient: one(&args.l1_coefficient, DEFAULT_PENALTY_COEFFICIENT),
        l1_warmup_steps: args.l1_warmup_steps.unwrap_or((steps / 20).max(1)),
        l0_coefficient: one(&args.l0_coefficient, DEFAULT_PENALTY_COEFFICIENT),
        l0_warmup_steps: args.l0_warmup_steps.unwrap_or((steps / 20).max(1)),
        l0_penalty: args.l0_penalty.unwrap_or_default(),
        jumprelu_bandwidth: args
            .jumprelu_bandwidth
            .unwrap_or(DEFAULT_JUMPRELU_BANDWIDTH),
        jumprelu_init_threshold: args
            .jumprelu_init_threshold
            .unwrap_or(DEFAULT_JUMPRELU_INIT_THRESHOLD),
        jumprelu_threshold_param: args.jumprelu_threshold_param.unwrap_or_default(),
        clip_grad_norm: match args.clip_grad_norm {
            Some(0.0) => None,
            Some(c) => Some(c),
            None => Some(DEFAULT_CLIP_GRAD_NORM),
        },
        k: if architecture.penalized() {
            relu_cap.min(d_sae)
        } else {
            one(&args.k, if quickstart { 8 } else { 32 })
        },
        d_sae,
        batch_size,
        lr: one(&args.lr, lr_for(d_sae)),
        lr_warmup_steps: args.lr_warmup_steps.unwrap_or((steps / 10).min(1000)),
        steps,
        adam_beta1: args.adam_beta1,
        adam_beta2: args.adam_beta2,
        adam_eps: args.adam_eps,
        seed: one(&args.seed, 0),
        data_seed: args.data_seed,
        shuffle_buffer: args.shuffle_buffer,
        b_dec_init: args.b_dec_init,
        normalize_activations: args.normalize_activations,
        // The ReLU family trains without AuxK (run::train::uses_auxk): say so in config.json.
        auxk_alpha: if architecture.penalized() {
            0.0
        } else {
            args.auxk_alpha
        },
        auxk_k: args.auxk_k.unwrap_or((d_in / 2).max(1)),
        dead_tokens: args.dead_tokens,
        checkpoint_every: args.checkpoint_every,
        log_every: args.log_every,
        skip_nonfinite: args.skip_nonfinite,
        format: args
            .format
            .unwrap_or(default_format(one(&args.architecture, Architecture::TopK))),
        init_sample_rows: 32768,
    };
    drop(shards);
    let axes = SweepAxes {
        relu_cap,
        l1_coefficient: args.l1_coefficient.clone(),
        l0_coefficient: args.l0_coefficient.clone(),
        architecture: args.architecture.clone(),
        format: args.format,
        k: args.k.clone(),
        d_sae: sizes,
        lr: args.lr.clone(),
        seed: args.seed.clone(),
    };
    if axes.is_sweep() || args.sweep_part.is_some() {
        let sweep = plan(&config, d_in, &axes, lr_for)?;
        for run in &sweep.runs {
            validate(&run.config, d_in).map_err(|e| anyhow!("sweep member {}: {e}", run.dir))?;
        }
        let report = train_sweep(&gpu, Some(sweep), &run_dir, args.sweep_part, &options)?;
        return print_sweep(&report, args.quiet);
    }
    let report = train(&gpu, Some(config), &options)?;
    print_report(&report, args.quiet)
}

/// A directory of run directories (a sweep whose sweep.json is gone).
fn holds_runs(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .any(|entry| entry.path().join("config.json").exists())
}

fn print_sweep(report: &SweepReport, quiet: bool) -> anyhow::Result<()> {
    if quiet {
        return Ok(());
    }
    for run in &report.file.runs {
        match (run.fvu, run.l0, run.dead_frac) {
            (Some(fvu), Some(l0), Some(dead)) => println!(
                "{:<24} held-out FVU {fvu:.4}, L0 {l0:.2}, dead {:.2}%",
                run.dir,
                100.0 * dead
            ),
            _ => println!("{:<24} not finished (another part, or stopped)", run.dir),
        }
    }
    if let Some(first) = report.reports.first() {
        println!(
            "trained {} members for {} steps in {:.1} s",
            report.reports.len(),
            first.steps,
            first.seconds
        );
    }
    println!("sweep directory: {}", report.dir.display());
    Ok(())
}

fn print_report(report: &crate::run::train::TrainReport, quiet: bool) -> anyhow::Result<()> {
    if quiet {
        return Ok(());
    }
    println!(
        "trained {} steps ({} tokens) in {:.1} s, {:.0} tokens/s",
        report.steps, report.tokens, report.seconds, report.tokens_per_s
    );
    if let Some(h) = &report.heldout {
        println!(
            "held-out ({} rows): FVU {:.4}, L0 {:.2}, dead {:.2}%",
            h.rows,
            h.fvu,
            h.l0,
            100.0 * h.dead_frac
        );
    }
    println!("run directory: {}", report.run_dir.display());
    Ok(())
}
