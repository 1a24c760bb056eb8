//! `sae encode SAE SHARDS… --out DIR`: sparse codes, shard by shard.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use super::eval::progress;
use super::GpuArgs;
use crate::analysis::encode::{encode_shard, output_path, ValueDtype};
use crate::data::{expand_inputs, open_shards};
use crate::io::write_json_atomic;
use crate::sae::formats::load_sae_at;
use crate::sae::forward::{GpuSae, DEFAULT_CAP};
use crate::sae::pass::{ForwardPass, PassDepth};

#[derive(Args, Debug)]
pub struct EncodeArgs {
    /// SAE directory: sparsify, SAELens, or a `sae train` run directory.
    sae: PathBuf,
    /// Activation shards: files, directories or glob patterns.
    #[arg(required = true)]
    shards: Vec<PathBuf>,
    /// Output directory: one file per input shard, same name.
    #[arg(long)]
    out: PathBuf,
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
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

pub fn run(args: EncodeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let loaded = load_sae_at(&args.sae, args.hookpoint.as_deref())?;
    let paths = expand_inputs(&args.shards)?;
    let shards = open_shards(&paths, &args.tensor, Some(loaded.params.d_in))?;
    let mut outputs = Vec::new();
    for shard in &shards {
        let out = output_path(&args.out, &shard.path)?;
        if outputs.contains(&out) {
            bail!(
                "{}: two input shards share this file name",
                shard.path.display()
            );
        }
        outputs.push(out);
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create", args.out.display()))?;
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
    write_json_atomic(
        &args.out.join("encode.json"),
        &serde_json::json!({
            "sae": loaded.dir.display().to_string(),
            "provenance": loaded.provenance,
            "k": sae.k,
            "values": args.values,
            "shards": report,
        }),
    )?;
    if !args.quiet {
        let dropped: u64 = report.iter().filter_map(|r| r.dropped_activations).sum();
        println!(
            "encoded {} rows from {} shards into {} (k = {})",
            total,
            report.len(),
            args.out.display(),
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
