//! `sae encode SAE SHARDS… --out DIR [--part I/N]`: sparse codes, shard by shard;
//! `sae encode merge PARTS… --out DIR`: one `encode.json` from the parts of a split job.

use std::path::{Path, PathBuf};

use anyhow::bail;
use clap::{Args, Subcommand};

use super::args::{InputArgs, PassArgs};
use super::GpuArgs;
use crate::run::encode::{encode, EncodeRequest, ValueDtype};
use crate::run::merge::merge_encode;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EncodeArgs {
    #[command(subcommand)]
    merge: Option<EncodeCommand>,
    #[command(flatten)]
    input: InputArgs,
    /// Output directory: one file per input shard, same name.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Type of the stored values.
    #[arg(long, value_enum, default_value_t = ValueDtype::F16)]
    values: ValueDtype,
    #[command(flatten)]
    pass: PassArgs,
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Subcommand, Debug)]
enum EncodeCommand {
    /// Combine the encode.part-I-of-N.json files of a split job (the files, or directories
    /// holding them) into one encode.json.
    Merge {
        #[arg(required = true)]
        parts: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(args: EncodeArgs) -> anyhow::Result<()> {
    if let Some(EncodeCommand::Merge { parts, out }) = args.merge {
        return merge(&parts, &out);
    }
    let usage = "usage: sae encode SAE SHARDS… --out DIR (or sae encode merge PARTS… --out DIR)";
    let Some(out) = args.out.clone() else {
        bail!("{usage}");
    };
    let request = EncodeRequest {
        inputs: args.input.inputs(&args.gpu, args.pass.matmul, usage)?,
        out,
        values: args.values,
        batch_size: args.pass.batch_size,
        cap: args.pass.cap,
        quiet: args.quiet,
    };
    let report = encode(&request)?;
    if !args.quiet {
        let dropped: u64 = report
            .shards
            .iter()
            .filter_map(|r| r.dropped_activations)
            .sum();
        println!(
            "encoded {} rows from {} shards into {} (k = {})",
            report.rows,
            report.shards.len(),
            request.out.display(),
            report.k
        );
        if report.thresholded {
            println!(
                "{dropped} activations beyond the cap of {} were dropped",
                report.k
            );
        }
    }
    Ok(())
}

fn merge(paths: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    let merged = merge_encode(paths, out)?;
    println!(
        "merged {} parts ({} shards) into {}",
        merged.parts,
        merged.shards,
        merged.written.display()
    );
    Ok(())
}
