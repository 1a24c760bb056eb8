//! `sae eval SAE SHARDS… [--part I/N]`: reconstruction metrics of any SAE over activation
//! shards; `sae eval merge PART_JSONS…`: the figures of one pass from the parts of a split job.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::GpuArgs;
use crate::analysis::eval::{evaluate, EvalOptions, EvalSummary};
use crate::data::parts::{split, Part, PartInfo};
use crate::data::{expand_inputs, open_shards};
use crate::run::parts::merge_eval;
use crate::sae::formats::load_sae_at;
use crate::sae::forward::DEFAULT_CAP;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EvalArgs {
    #[command(subcommand)]
    merge: Option<EvalCommand>,
    /// SAE directory: sparsify, SAELens, or a `sae train` run directory.
    sae: Option<PathBuf>,
    /// Activation shards: files, directories or glob patterns.
    shards: Vec<PathBuf>,
    /// A sparsify run saved for several hookpoints: the one to use (its subdirectory).
    #[arg(long)]
    hookpoint: Option<String>,
    #[command(flatten)]
    options: EvalFlags,
    /// Skip (and count) rows holding NaN or Inf instead of stopping.
    #[arg(long)]
    skip_nonfinite: bool,
    /// Evaluate only part I of N (0-based) of the shards, sorted by path and split into N
    /// groups of whole shards balanced by rows; merge the parts' --json with `sae eval merge`.
    #[arg(long, value_name = "I/N")]
    part: Option<Part>,
    /// Print one JSON object (with the sums `sae eval merge` needs).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// How SAEs are run over shards for their figures, shared by `sae eval` and `sae frontier`
/// so both give the same numbers.
#[derive(Args, Debug)]
pub struct EvalFlags {
    /// Name of the activation tensor in the shards.
    #[arg(long, default_value = "activations")]
    pub tensor: String,
    /// Rows per GPU batch.
    #[arg(long, default_value_t = 4096)]
    pub batch_size: usize,
    /// ReLU / JumpReLU SAEs: latents kept per row (the rest are counted as dropped).
    #[arg(long, default_value_t = DEFAULT_CAP)]
    pub cap: usize,
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

pub fn progress(total_rows: u64, hidden: bool) -> ProgressBar {
    let bar = if hidden {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(total_rows), ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {human_pos}/{human_len} rows  {per_sec}  [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn print_summary(summary: &EvalSummary, cap: usize) {
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
    let Some(sae_dir) = args.sae.clone() else {
        bail!("usage: sae eval SAE SHARDS… (or sae eval merge PART_JSONS…)");
    };
    anyhow::ensure!(!args.shards.is_empty(), "no input shards given");
    anyhow::ensure!(
        args.options.batch_size > 0,
        "--batch-size must be at least 1"
    );
    let loaded = load_sae_at(&sae_dir, args.hookpoint.as_deref())?;
    let params = loaded.params;
    let mut shards = open_shards(
        &expand_inputs(&args.shards)?,
        &args.options.tensor,
        Some(params.d_in),
    )?;
    let mut part_info: Option<PartInfo> = None;
    if let Some(part) = args.part {
        let (mine, info) = split(shards, part)?;
        shards = mine;
        part_info = Some(info);
    }
    let total: u64 = shards.iter().map(|s| s.rows as u64).sum();
    let gpu = args.gpu.open()?;
    let bar = progress(total, args.json);
    let (acc, cap) = evaluate(
        &gpu,
        &params,
        Arc::new(shards),
        EvalOptions {
            batch_rows: args.options.batch_size,
            cap: args.options.cap,
            skip_nonfinite: args.skip_nonfinite,
        },
        |rows| bar.inc(rows),
    )?;
    bar.finish_and_clear();
    let summary = acc.summary();
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        value["sae"] = serde_json::to_value(&loaded.provenance)?;
        value["cap"] = json!(cap);
        value["stats"] = serde_json::to_value(&acc)?;
        if let Some(info) = &part_info {
            value["part"] = serde_json::to_value(info)?;
        }
        println!("{}", serde_json::to_string(&value)?);
    } else {
        println!("SAE: {}", loaded.provenance.describe());
        for fold in &loaded.provenance.folded {
            println!("     {fold}");
        }
        if let Some(info) = &part_info {
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
        print_summary(&summary, cap);
    }
    Ok(())
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
