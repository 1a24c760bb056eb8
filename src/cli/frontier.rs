//! `sae frontier RUN_DIRS… --eval SHARDS… --out DIR`: held-out FVU against L0 for several SAEs
//! (a sweep directory counts as its members), as frontier.json and frontier.png.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::eval::{progress, EvalFlags};
use super::GpuArgs;
use crate::analysis::eval::EvalOptions;
use crate::data::{expand_inputs, open_shards};
use crate::run::frontier::{expand_runs, frontier};

#[derive(Args, Debug)]
pub struct FrontierArgs {
    /// SAE directories: `sae train` runs, sweep directories (their members), sparsify or
    /// SAELens directories.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Held-out activation shards (files, directories or globs).
    #[arg(long, required = true, num_args = 1..)]
    eval: Vec<PathBuf>,
    /// Output directory: frontier.json and frontier.png.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    options: EvalFlags,
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

pub fn run(args: FrontierArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.options.batch_size > 0,
        "--batch-size must be at least 1"
    );
    let runs = expand_runs(&args.runs)?;
    let shards = open_shards(&expand_inputs(&args.eval)?, &args.options.tensor, None)?;
    let total: u64 = shards.iter().map(|s| s.rows as u64).sum::<u64>() * runs.len() as u64;
    let gpu = args.gpu.open()?;
    let bar = progress(total, args.quiet);
    let points = frontier(
        &gpu,
        &runs,
        Arc::new(shards),
        EvalOptions {
            batch_rows: args.options.batch_size,
            cap: args.options.cap,
            skip_nonfinite: false,
        },
        &args.out,
        |rows| bar.inc(rows),
    )?;
    bar.finish_and_clear();
    if !args.quiet {
        println!(
            "{:<14} {:>8} {:>9} {:>9}  run",
            "architecture", "L0", "FVU", "dead"
        );
        for p in &points {
            println!(
                "{:<14} {:>8.2} {:>9.5} {:>9.4}  {}",
                p.architecture, p.l0, p.fvu, p.dead_frac, p.dir
            );
        }
        println!("→ {}", args.out.join("frontier.png").display());
    }
    Ok(())
}
