//! `sae train`: flags → a [`TrainConfig`], the bundled default when no data is given.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use super::GpuArgs;
use crate::data::synth::{write_synthetic, SynthConfig};
use crate::data::{expand_inputs, open_shards, RowRange};
use crate::run::train::{
    refuse_existing_run, train, BDecInit, ExportFormat, RunOptions, TrainConfig,
};
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
    /// Latents kept per token (default 32; 8 for the synthetic quick start).
    #[arg(long)]
    k: Option<usize>,
    /// d_sae = expansion factor × d_in (default 8; 4 for the quick start).
    #[arg(long, conflicts_with = "d_sae")]
    expansion_factor: Option<usize>,
    /// Dictionary size.
    #[arg(long)]
    d_sae: Option<usize>,
    /// Tokens per optimiser step (default 4096; 512 for the quick start).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate (default 2e-4·√(2¹⁴ / d_sae); 4e-3 for the short quick start).
    #[arg(long)]
    lr: Option<f64>,
    /// Linear warmup steps (default: 10% of the steps, at most 1000).
    #[arg(long)]
    lr_warmup_steps: Option<u64>,
    /// Training budget in tokens.
    #[arg(long, conflicts_with = "epochs")]
    tokens: Option<u64>,
    /// Passes over the training data (default 1; 2 for the quick start).
    #[arg(long)]
    epochs: Option<u64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
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
    /// Checkpoint layouts to export at the end.
    #[arg(long, value_enum, default_value_t = ExportFormat::Both)]
    format: ExportFormat,
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

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let gpu = args.gpu.open()?;
    if let Some(run_dir) = args.resume.clone() {
        let options = RunOptions {
            run_dir,
            resume: true,
            overwrite: false,
            quiet: args.quiet,
            stop_after: args.stop_after,
            tune: !args.no_tune,
        };
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
    let d_sae = args.d_sae.unwrap_or(
        d_in * args
            .expansion_factor
            .unwrap_or(if quickstart { 4 } else { 8 }),
    );
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
    let config = TrainConfig {
        inputs,
        tensor: args.tensor.clone(),
        eval_inputs: args.eval.clone(),
        eval_fraction,
        eval_every: args.eval_every,
        k: args.k.unwrap_or(if quickstart { 8 } else { 32 }),
        d_sae,
        batch_size,
        lr: args
            .lr
            .unwrap_or_else(|| if quickstart { 4e-3 } else { default_lr(d_sae) }),
        lr_warmup_steps: args.lr_warmup_steps.unwrap_or((steps / 10).min(1000)),
        steps,
        adam_beta1: args.adam_beta1,
        adam_beta2: args.adam_beta2,
        adam_eps: args.adam_eps,
        seed: args.seed,
        shuffle_buffer: args.shuffle_buffer,
        b_dec_init: args.b_dec_init,
        normalize_activations: args.normalize_activations,
        auxk_alpha: args.auxk_alpha,
        auxk_k: args.auxk_k.unwrap_or((d_in / 2).max(1)),
        dead_tokens: args.dead_tokens,
        checkpoint_every: args.checkpoint_every,
        log_every: args.log_every,
        skip_nonfinite: args.skip_nonfinite,
        format: args.format,
        init_sample_rows: 32768,
    };
    drop(shards);
    let report = train(&gpu, Some(config), &options)?;
    print_report(&report, args.quiet)
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
