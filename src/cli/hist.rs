//! `sae hist SAE SHARDS… --out DIR` and `sae hist merge A B … --out DIR`.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Subcommand};

use super::eval::progress;
use super::GpuArgs;
use crate::analysis::contexts::{load_tokenizer, write_top_examples};
use crate::analysis::hist::{compute, save, HistConfig};
use crate::data::parts::{split, Part};
use crate::data::{expand_inputs, open_shards};
use crate::run::parts::merge_hist;
use crate::sae::formats::load_sae_at;
use crate::sae::forward::{GpuSae, DEFAULT_CAP};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HistArgs {
    #[command(subcommand)]
    merge: Option<HistCommand>,
    /// SAE directory: sparsify, SAELens, or a `sae train` run directory.
    sae: Option<PathBuf>,
    /// Activation shards: files, directories or glob patterns.
    shards: Vec<PathBuf>,
    /// Output directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A sparsify run saved for several hookpoints: the one to use (its subdirectory).
    #[arg(long)]
    hookpoint: Option<String>,
    #[arg(long, default_value = "activations")]
    tensor: String,
    /// Log-spaced bins per feature.
    #[arg(long, default_value_t = 50)]
    bins: usize,
    /// Process only part I of N (0-based) of the shards, sorted by path and split into N groups
    /// of whole shards balanced by rows; `sae hist merge` the parts (needs --range).
    #[arg(long, value_name = "I/N")]
    part: Option<Part>,
    /// Histogram range LO,HI (default: from the first batch). Parts to be merged need the same.
    #[arg(long, value_name = "LO,HI", value_parser = parse_range)]
    range: Option<(f32, f32)>,
    /// Also count co-occurrences between the N most frequent features (a second pass).
    #[arg(long, default_value_t = 0, value_name = "N")]
    cooccurrence: usize,
    /// Top activating rows kept per feature.
    #[arg(long, default_value_t = 20)]
    top: usize,
    #[arg(long, default_value_t = 4096)]
    batch_size: usize,
    /// ReLU / JumpReLU SAEs: latents kept per row.
    #[arg(long, default_value_t = DEFAULT_CAP)]
    cap: usize,
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
        let tokenizer = tokenizer.as_deref().map(load_tokenizer).transpose()?;
        let (merged, sae) = merge_hist(&parts)?;
        if let Some(tokenizer) = &tokenizer {
            write_top_examples(&out, &merged, &tensor, tokenizer, context)?;
        }
        save(&merged, &sae.0, sae.1.as_ref(), &out)?;
        println!(
            "merged {} parts ({} rows) into {}",
            parts.len(),
            merged.rows,
            out.display()
        );
        return Ok(());
    }
    let (Some(sae_dir), Some(out)) = (args.sae.clone(), args.out.clone()) else {
        bail!("usage: sae hist SAE SHARDS… --out DIR (or sae hist merge A B … --out DIR)");
    };
    if args.shards.is_empty() {
        bail!("no input shards given");
    }
    let tokenizer = args.tokenizer.as_deref().map(load_tokenizer).transpose()?;
    let loaded = load_sae_at(&sae_dir, args.hookpoint.as_deref())?;
    let mut shards = open_shards(
        &expand_inputs(&args.shards)?,
        &args.tensor,
        Some(loaded.params.d_in),
    )?;
    let mut part_info = None;
    if let Some(part) = args.part {
        if args.range.is_none() {
            bail!("--part needs --range LO,HI: every part must bin its activations the same way");
        }
        if args.cooccurrence > 0 {
            bail!("--part cannot count --cooccurrence: the tracked features come from the whole data's fire counts");
        }
        let (mine, info) = split(shards, part)?;
        shards = mine;
        part_info = Some(info);
    }
    let passes: u64 = if args.cooccurrence > 0 { 2 } else { 1 };
    let total: u64 = passes * shards.iter().map(|s| s.rows as u64).sum::<u64>();
    let gpu = args.gpu.open()?;
    let sae = GpuSae::upload_with_cap(&gpu, &loaded.params, args.cap, args.batch_size)?;
    let bar = progress(total, args.quiet);
    let config = HistConfig {
        batch_size: args.batch_size,
        bins: args.bins,
        range: args.range,
        top_m: args.top,
        cooccurrence: args.cooccurrence,
    };
    let mut hist = compute(&gpu, &sae, shards, config, |rows| bar.inc(rows))?;
    hist.part = part_info;
    bar.finish_and_clear();
    if let Some(tokenizer) = &tokenizer {
        write_top_examples(&out, &hist, &args.tensor, tokenizer, args.context)?;
    }
    let provenance = serde_json::to_value(&loaded.provenance)?;
    save(
        &hist,
        &loaded.dir.display().to_string(),
        Some(&provenance),
        &out,
    )?;
    if !args.quiet {
        let dead = hist.fire_count.iter().filter(|&&c| c == 0).count();
        println!(
            "{} rows, {} features ({dead} never fired); wrote {}",
            hist.rows,
            hist.d_sae,
            out.display()
        );
    }
    Ok(())
}
