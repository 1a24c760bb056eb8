//! `sae eval SAE SHARDS… [--part I/N]`: reconstruction metrics of any SAE over activation
//! shards; `sae eval merge PART_JSONS…`: the figures of one pass from the parts of a split job.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;

use super::args::{InputArgs, PassArgs, TargetArgs};
use super::GpuArgs;
use crate::analysis::eval::{EvalOptions, EvalSummary};
use crate::gpu::{F16Overflow, Matmul};
use crate::run::eval::{eval, EvalRequest};
use crate::run::merge::merge_eval;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    merge: Option<EvalCommand>,
    #[command(flatten)]
    input: InputArgs,
    #[command(flatten)]
    targets: TargetArgs,
    #[command(flatten)]
    pass: PassArgs,
    /// Skip (and count) rows holding NaN or Inf instead of stopping.
    #[arg(long)]
    skip_nonfinite: bool,
    /// Print one JSON object (with the sums `sae eval merge` needs).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Subcommand, Debug)]
enum EvalCommand {
    /// Combine the `--json` outputs of `sae eval --part I/N` into the figures of one pass.
    Merge {
        #[arg(required = true)]
        parts: Vec<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub fn print_summary(summary: &EvalSummary, cap: usize) {
    println!("rows            {}", summary.rows);
    println!("FVU             {:.6}", summary.fvu);
    println!("MSE             {:.6}", summary.mse);
    println!("L0              {:.3}", summary.l0);
    println!("dead fraction   {:.6}", summary.dead_frac);
    println!("dense fraction  {:.6}", summary.dense_frac);
    println!("mean cosine     {:.6}", summary.mean_cosine);
    println!("rel. recon bias {:.6}", summary.rel_recon_bias);
    if let Some(dropped) = summary.dropped_activations {
        println!("dropped         {dropped} activations past the cap of {cap}");
    }
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if let Some(EvalCommand::Merge { parts, json }) = args.merge {
        return merge(&parts, json);
    }
    let mut inputs = args.input.inputs(
        &args.gpu,
        args.pass.matmul,
        "usage: sae eval SAE SHARDS… (or sae eval merge PART_JSONS…)",
    )?;
    inputs.targets = args.targets.targets(&args.input.tensor);
    let request = EvalRequest {
        inputs,
        options: EvalOptions {
            batch_rows: args.pass.batch_size,
            cap: args.pass.cap,
            matmul: args.pass.matmul,
            skip_nonfinite: args.skip_nonfinite,
        },
        quiet: args.json,
    };
    let report = eval(&request)?;
    if args.json {
        println!("{}", serde_json::to_string(&report.json()?)?);
        return Ok(());
    }
    println!("SAE: {}", report.provenance.describe());
    for fold in &report.provenance.folded {
        println!("     {fold}");
    }
    if let Some(info) = &report.part {
        println!(
            "part {}/{}: {} of {} shards, {} of {} rows",
            info.index,
            info.count,
            info.shards.len(),
            info.total_shards,
            info.rows,
            info.total_rows
        );
    }
    print_summary(&report.summary, report.cap);
    print_matmul(report.matmul, report.f16_overflow);
    Ok(())
}

/// How the encoder GEMM ran, and what f16 could not hold (only when something).
pub fn print_matmul(matmul: Matmul, overflow: F16Overflow) {
    match matmul.tile() {
        None => println!("matmul          f32"),
        Some(tile) => println!("matmul          f16 ({})", tile.label()),
    }
    if overflow != F16Overflow::default() {
        println!(
            "f16 overflow    {} rows not finite, {} weights clamped to ±65504",
            overflow.rows, overflow.weights
        );
    }
}

fn merge(paths: &[PathBuf], json_out: bool) -> anyhow::Result<()> {
    let merged = merge_eval(paths)?;
    let summary = merged.stats.summary();
    if json_out {
        let mut value = serde_json::to_value(&summary)?;
        value["sae"] = merged.sae;
        value["cap"] = merged.cap;
        value["stats"] = serde_json::to_value(&merged.stats)?;
        value["parts"] = json!(merged.parts);
        println!("{}", serde_json::to_string(&value)?);
    } else {
        println!("merged {} parts", merged.parts);
        print_summary(&summary, merged.cap.as_u64().unwrap_or(0) as usize);
    }
    Ok(())
}
