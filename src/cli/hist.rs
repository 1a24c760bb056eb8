//! `sae hist SAE SHARDS… --out DIR` and `sae hist merge A B … --out DIR`.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};

use super::args::{InputArgs, PassArgs};
use super::GpuArgs;
use crate::analysis::hist::HistConfig;
use crate::run::hist::{hist, merge, HistMergeRequest, HistRequest};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HistArgs {
    #[command(subcommand)]
    merge: Option<HistCommand>,
    #[command(flatten)]
    input: InputArgs,
    /// Output directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Log-spaced bins per feature.
    #[arg(long, default_value_t = 50)]
    bins: usize,
    /// Histogram range LO,HI (default: from the first batch). Parts to be merged need the same.
    #[arg(long, value_name = "LO,HI", value_parser = parse_range)]
    range: Option<(f32, f32)>,
    /// Also count co-occurrences between the N most frequent features (a second pass).
    #[arg(long, default_value_t = 0, value_name = "N")]
    cooccurrence: usize,
    /// Top activating rows kept per feature.
    #[arg(long, default_value_t = 20)]
    top: usize,
    #[command(flatten)]
    pass: PassArgs,
    /// tokenizer.json: also write top_examples.jsonl with decoded context windows.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Tokens of context either side of each top row.
    #[arg(long, default_value_t = 8)]
    context: usize,
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Subcommand, Debug)]
enum HistCommand {
    /// Merge `sae hist` outputs of disjoint shard subsets (in order) into one.
    Merge {
        #[arg(required = true)]
        parts: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// tokenizer.json: also write top_examples.jsonl (reads the shards named in the parts).
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        #[arg(long, default_value_t = 8)]
        context: usize,
        #[arg(long, default_value = "activations")]
        tensor: String,
    },
}

fn parse_range(text: &str) -> Result<(f32, f32), String> {
    let (lo, hi) = text.split_once(',').ok_or("expected LO,HI")?;
    let lo: f32 = lo.trim().parse().map_err(|e| format!("LO: {e}"))?;
    let hi: f32 = hi.trim().parse().map_err(|e| format!("HI: {e}"))?;
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return Err(format!("need 0 < LO < HI, got {lo},{hi}"));
    }
    Ok((lo, hi))
}

pub fn run(args: HistArgs) -> anyhow::Result<()> {
    if let Some(HistCommand::Merge {
        parts,
        out,
        tokenizer,
        context,
        tensor,
    }) = args.merge
    {
        let request = HistMergeRequest {
            parts,
            out,
            tokenizer,
            context,
            tensor,
        };
        let merged = merge(&request)?;
        println!(
            "merged {} parts ({} rows) into {}",
            request.parts.len(),
            merged.rows,
            request.out.display()
        );
        return Ok(());
    }
    let usage = "usage: sae hist SAE SHARDS… --out DIR (or sae hist merge A B … --out DIR)";
    let Some(out) = args.out.clone() else {
        bail!("{usage}");
    };
    let request = HistRequest {
        inputs: args.input.inputs(&args.gpu, args.pass.matmul, usage)?,
        out,
        config: HistConfig {
            batch_size: args.pass.batch_size,
            bins: args.bins,
            range: args.range,
            top_m: args.top,
            cooccurrence: args.cooccurrence,
        },
        cap: args.pass.cap,
        tokenizer: args.tokenizer,
        context: args.context,
        quiet: args.quiet,
    };
    let hist = hist(&request)?;
    if !args.quiet {
        let dead = hist.fire_count.iter().filter(|&&c| c == 0).count();
        println!(
            "{} rows, {} features ({dead} never fired); wrote {}",
            hist.rows,
            hist.d_sae,
            request.out.display()
        );
    }
    Ok(())
}
