//! `sae encode SAE SHARDS… --out DIR [--part I/N]`: sparse codes, shard by shard;
//! `sae encode merge PARTS… --out DIR`: one `encode.json` from the parts of a split job.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;

use super::eval::progress;
use super::GpuArgs;
use crate::analysis::encode::{encode_shard, output_path, ValueDtype};
use crate::data::parts::{split, Part};
use crate::data::{expand_inputs, open_shards};
use crate::io::write_json_atomic;
use crate::run::parts::{encode_part_file, merge_encode};
use crate::sae::formats::load_sae_at;
use crate::sae::forward::{GpuSae, DEFAULT_CAP};
use crate::sae::pass::{ForwardPass, PassDepth};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct EncodeArgs {
    #[command(subcommand)]
    merge: Option<EncodeCommand>,
    /// SAE directory: sparsify, SAELens, or a `sae train` run directory.
    sae: Option<PathBuf>,
    /// Activation shards: files, directories or glob patterns.
    shards: Vec<PathBuf>,
    /// Output directory: one file per input shard, same name.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A sparsify run saved for several hookpoints: the one to use (its subdirectory).
    #[arg(long)]
    hookpoint: Option<String>,
    #[arg(long, default_value = "activations")]
    tensor: String,
    /// Type of the stored values.
    #[arg(long, value_enum, default_value_t = ValueDtype::F16)]
    values: ValueDtype,
    #[arg(long, default_value_t = 4096)]
    batch_size: usize,
    /// ReLU / JumpReLU SAEs: latents kept per row (the rest are counted as dropped).
    #[arg(long, default_value_t = DEFAULT_CAP)]
    cap: usize,
    /// Encode only part I of N (0-based) of the shards, sorted by path and split into N
    /// groups of whole shards balanced by rows; writes encode.part-I-of-N.json beside the
    /// codes, for `sae encode merge`.
    #[arg(long, value_name = "I/N")]
    part: Option<Part>,
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
    let (Some(sae_dir), Some(out_dir)) = (args.sae.clone(), args.out.clone()) else {
        bail!("usage: sae encode SAE SHARDS… --out DIR (or sae encode merge PARTS… --out DIR)");
    };
    anyhow::ensure!(!args.shards.is_empty(), "no input shards given");
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let loaded = load_sae_at(&sae_dir, args.hookpoint.as_deref())?;
    let paths = expand_inputs(&args.shards)?;
    let mut shards = open_shards(&paths, &args.tensor, Some(loaded.params.d_in))?;
    let mut part_info = None;
    if let Some(part) = args.part {
        let (mine, info) = split(shards, part)?;
        shards = mine;
        part_info = Some(info);
    }
    let mut outputs = Vec::new();
    for shard in &shards {
        let out = output_path(&out_dir, &shard.path)?;
        if outputs.contains(&out) {
            bail!(
                "{}: two input shards share this file name",
                shard.path.display()
            );
        }
        outputs.push(out);
    }
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("{}: cannot create", out_dir.display()))?;
    let gpu = args.gpu.open()?;
    let sae = GpuSae::upload_with_cap(&gpu, &loaded.params, args.cap, args.batch_size)?;
    let pass = ForwardPass::new(&gpu, &sae, args.batch_size, PassDepth::Codes)?;
    let total: u64 = shards.iter().map(|s| s.rows as u64).sum();
    let bar = progress(total, args.quiet);
    let mut report = Vec::new();
    for (shard, out) in shards.into_iter().zip(outputs) {
        report.push(encode_shard(&pass, shard, &out, args.values, |rows| {
            bar.inc(rows)
        })?);
    }
    bar.finish_and_clear();
    let mut summary = json!({
        "sae": loaded.dir.display().to_string(),
        "provenance": loaded.provenance,
        "k": sae.k,
        "values": args.values,
        "shards": report,
    });
    let written = match &part_info {
        Some(info) => {
            summary["part"] = serde_json::to_value(info)?;
            out_dir.join(encode_part_file(info))
        }
        None => out_dir.join("encode.json"),
    };
    write_json_atomic(&written, &summary)?;
    if !args.quiet {
        let dropped: u64 = report.iter().filter_map(|r| r.dropped_activations).sum();
        println!(
            "encoded {} rows from {} shards into {} (k = {})",
            total,
            report.len(),
            out_dir.display(),
            sae.k
        );
        if sae.thresholds.is_some() {
            println!(
                "{dropped} activations beyond the cap of {} were dropped",
                sae.k
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
