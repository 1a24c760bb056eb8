//! `sae train`: flags → a [`TrainRequest`] (the job resolves defaults, the quick start's where
//! no data is given) → one run or sweep → the report printed.

use std::path::PathBuf;

use clap::Args;

use super::{GpuArgs, MatmulArgs};
use crate::data::parts::Part;
use crate::gpu::F16Overflow;
use crate::run::train::{
    resolve, BDecInit, ExportFormat, SweepReport, TrainOutcome, TrainReport, TrainRequest,
};
use crate::sae::arch::{Architecture, L0Penalty, ThresholdParam};

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
    /// Train a transcoder: its decoder predicts these targets (e.g. an MLP's output) from the
    /// shards (its input). Files, directories or globs pairing with the shards file for file,
    /// row for row.
    #[arg(long, num_args = 1.., value_name = "TARGETS")]
    target: Vec<PathBuf>,
    /// Train a transcoder whose targets are this tensor: of the --target files, or without
    /// them of the shards themselves (e.g. --tensor mlp_in --target-tensor mlp_out).
    #[arg(long, value_name = "NAME")]
    target_tensor: Option<String>,
    /// The held-out targets beside --eval, when the targets are separate files (--target).
    #[arg(long, num_args = 1.., value_name = "TARGETS")]
    eval_target: Vec<PathBuf>,
    /// Train a transcoder (implied by --target or --target-tensor; without them, an error).
    #[arg(long)]
    transcoder: bool,
    /// A skip-transcoder: add a linear path W_skip from input to output, initialised to zero
    /// and trained with the rest (sparsify's skip connection).
    #[arg(long)]
    skip: bool,
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
    /// Steps at the end over which the rate decays linearly to 0 (default: the last 20% of
    /// the steps, Anthropic's schedule; 0: constant after the warmup, SAELens' default; the
    /// step count: decay from the warmup on, sparsify's).
    #[arg(long)]
    lr_decay_steps: Option<u64>,
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
    #[arg(long, env = "SAE_NO_TUNE", value_parser = clap::builder::BoolishValueParser::new())]
    no_tune: bool,
    /// Checkpoint and stop after this many steps (continue later with --resume).
    #[arg(long, value_name = "STEPS")]
    stop_after: Option<u64>,
    #[command(flatten)]
    matmul: MatmulArgs,
    #[command(flatten)]
    gpu: GpuArgs,
}

fn parse_sweep_part(text: &str) -> Result<Part, String> {
    text.parse::<Part>()
        .map_err(|e| e.replace("--part", "--sweep-part"))
}

impl TrainArgs {
    fn request(self) -> TrainRequest {
        TrainRequest {
            shards: self.shards,
            out: self.out,
            resume: self.resume,
            overwrite: self.overwrite,
            quiet: self.quiet,
            tune: !self.no_tune,
            stop_after: self.stop_after,
            sweep_part: self.sweep_part,
            tensor: self.tensor,
            target: self.target,
            target_tensor: self.target_tensor,
            eval_target: self.eval_target,
            transcoder: self.transcoder,
            skip: self.skip,
            architecture: self.architecture,
            k: self.k,
            expansion_factor: self.expansion_factor,
            d_sae: self.d_sae,
            cap: self.cap,
            matryoshka_widths: self.matryoshka_widths,
            l1_coefficient: self.l1_coefficient,
            l1_warmup_steps: self.l1_warmup_steps,
            l0_coefficient: self.l0_coefficient,
            l0_warmup_steps: self.l0_warmup_steps,
            l0_penalty: self.l0_penalty,
            jumprelu_bandwidth: self.jumprelu_bandwidth,
            jumprelu_init_threshold: self.jumprelu_init_threshold,
            jumprelu_threshold_param: self.jumprelu_threshold_param,
            clip_grad_norm: self.clip_grad_norm,
            batch_size: self.batch_size,
            tokens: self.tokens,
            epochs: self.epochs,
            eval: self.eval,
            eval_fraction: self.eval_fraction,
            shuffle_buffer: self.shuffle_buffer,
            data_seed: self.data_seed,
            skip_nonfinite: self.skip_nonfinite,
            lr: self.lr,
            lr_warmup_steps: self.lr_warmup_steps,
            lr_decay_steps: self.lr_decay_steps,
            adam_beta1: self.adam_beta1,
            adam_beta2: self.adam_beta2,
            adam_eps: self.adam_eps,
            seed: self.seed,
            b_dec_init: self.b_dec_init,
            normalize_activations: self.normalize_activations,
            auxk_alpha: self.auxk_alpha,
            auxk_k: self.auxk_k,
            dead_tokens: self.dead_tokens,
            checkpoint_every: self.checkpoint_every,
            log_every: self.log_every,
            eval_every: self.eval_every,
            format: self.format,
            matmul: self.matmul.matmul,
        }
    }
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let gpu = args.gpu.open()?;
    let quiet = args.quiet;
    let outcome = resolve(args.request())?.run(&gpu)?;
    if quiet {
        return Ok(());
    }
    match outcome {
        TrainOutcome::Run(report) => print_report(&report),
        TrainOutcome::Sweep(report) => print_sweep(&report),
    }
    Ok(())
}

fn print_sweep(report: &SweepReport) {
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
}

fn print_report(report: &TrainReport) {
    println!(
        "trained {} steps ({} tokens) in {:.1} s, {:.0} tokens/s, matmul {}",
        report.steps, report.tokens, report.seconds, report.tokens_per_s, report.matmul
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
    if let Some(o) = report.f16_overflow.filter(|o| *o != F16Overflow::default()) {
        println!(
            "f16 overflow: {} rows not finite, {} weights clamped to ±65504",
            o.rows, o.weights
        );
    }
    println!("run directory: {}", report.run_dir.display());
}
