//! `sae frontier RUN_DIRS… --eval SHARDS… --out DIR`: held-out FVU against L0 for several SAEs
//! (a sweep directory counts as its members), as frontier.json and frontier.png.

use std::path::PathBuf;

use clap::Args;

use super::args::{PassArgs, TargetArgs};
use super::GpuArgs;
use crate::analysis::eval::EvalOptions;
use crate::run::frontier::{frontier, FrontierRequest};

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
    /// Name of the activation tensor in the shards.
    #[arg(long, default_value = "activations")]
    tensor: String,
    #[command(flatten)]
    targets: TargetArgs,
    #[command(flatten)]
    pass: PassArgs,
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

pub fn run(args: FrontierArgs) -> anyhow::Result<()> {
    let request = FrontierRequest {
        runs: args.runs,
        eval: args.eval,
        targets: args.targets.targets(&args.tensor),
        tensor: args.tensor,
        options: EvalOptions {
            batch_rows: args.pass.batch_size,
            cap: args.pass.cap,
            matmul: args.pass.matmul,
            skip_nonfinite: false,
        },
        out: args.out,
        quiet: args.quiet,
        adapter: args.gpu.request(),
    };
    let points = frontier(&request)?;
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
        println!("→ {}", request.out.join("frontier.png").display());
    }
    Ok(())
}
